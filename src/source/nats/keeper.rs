//! The ack keeper: every message this replica has fetched and not yet settled (events and
//! retry records alike), kept alive with in-progress acks, and settled with a confirmed ack
//! or a NAK.
//!
//! A JetStream message is redelivered (possibly to another replica, out of order) once it
//! stays unacknowledged for the consumer's `ack_wait`. A message here may wait far longer
//! than that: in the read-ahead queue, behind earlier events of its object, or through
//! in-process retries. So the keeper sends `+WPI` for every held message well within
//! `ack_wait`, from the moment it is fetched until it is settled.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::subject::Subject;
use async_nats::Client;
use bytes::Bytes;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::task::JoinSet;

use crate::source::Settle;

/// Each ack request waits this long for the server's confirmation before it is sent again.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Acks settled together are sent together, at most this many: one confirmation then
/// covers them all (see [`send_batch`]).
const ACK_BATCH: usize = 512;
/// Longest pause between two tries of one ack while the server is away.
const ACK_RETRY_MAX: Duration = Duration::from_secs(2);

/// What finally happens to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every outcome is final: `+ACK`.
    Ack,
    /// Not to be handled before this delay (a retry record not yet due): `-NAK` with the
    /// delay, so JetStream holds it until then.
    Retry(Duration),
    /// Given up unsettled (shutdown before a final outcome): `-NAK` now, so another replica
    /// takes it without waiting for `ack_wait`.
    Release,
}

impl From<Settle> for Outcome {
    fn from(how: Settle) -> Outcome {
        match how {
            Settle::Done => Outcome::Ack,
            Settle::Redeliver(delay) => Outcome::Retry(delay),
        }
    }
}

impl Outcome {
    fn kind(self) -> AckKind {
        match self {
            Outcome::Ack => AckKind::Ack,
            Outcome::Retry(delay) => AckKind::Nak(Some(delay)),
            Outcome::Release => AckKind::Nak(None),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Retry(_) => "nak_delay",
            Outcome::Release => "nak",
        }
    }
}

enum Command {
    Hold { id: u64, reply: Subject },
    Settle { id: u64, outcome: Outcome },
}

/// Registers messages with the keeper task.
#[derive(Clone)]
pub struct Keeper {
    tx: mpsc::UnboundedSender<Command>,
}

/// One held message; settling or dropping it tells the keeper. It also carries the fetch
/// loop's room permit, so the replica never holds more than it can process.
pub struct Held {
    id: u64,
    tx: mpsc::UnboundedSender<Command>,
    settled: bool,
    _room: Option<OwnedSemaphorePermit>,
}

impl Held {
    /// Settles the message: ack, or NAK with a delay.
    pub fn settle(mut self, how: Settle) {
        self.settled = true;
        let _ = self.tx.send(Command::Settle { id: self.id, outcome: how.into() });
    }

    /// Hands the message back to be delivered again after `delay` (a retry record that is
    /// not due yet): JetStream holds it meanwhile.
    pub fn postpone(mut self, delay: Duration) {
        self.settled = true;
        let _ = self.tx.send(Command::Settle { id: self.id, outcome: Outcome::Retry(delay) });
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.settled {
            // Dropped unsettled: the pipeline gave up on it (shutdown). Hand it back now.
            let _ = self.tx.send(Command::Settle { id: self.id, outcome: Outcome::Release });
        }
    }
}

impl Keeper {
    /// Starts the keeper task; it ends once every [`Keeper`] and [`Held`] is gone and every
    /// ack has been confirmed (or given up, a minute or two ack_waits later).
    pub fn start(
        client: Client,
        ack_wait: Duration,
        connections: watch::Receiver<u64>,
    ) -> (Keeper, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(client, ack_wait, connections, rx));
        (Keeper { tx }, task)
    }

    /// Holds the message whose ack subject is `reply` until the returned guard settles.
    pub fn hold(&self, id: u64, reply: Subject, room: Option<OwnedSemaphorePermit>) -> Held {
        let _ = self.tx.send(Command::Hold { id, reply });
        Held { id, tx: self.tx.clone(), settled: false, _room: room }
    }
}

/// How often held messages are touched: a third of `ack_wait`, so two progress acks may be
/// lost before the server redelivers.
pub fn progress_interval(ack_wait: Duration) -> Duration {
    (ack_wait / 3).max(Duration::from_millis(100))
}

async fn run(
    client: Client,
    ack_wait: Duration,
    mut connections: watch::Receiver<u64>,
    mut rx: mpsc::UnboundedReceiver<Command>,
) {
    let mut held: HashMap<u64, Subject> = HashMap::new();
    let mut acks: JoinSet<()> = JoinSet::new();
    let mut progress: Option<tokio::task::JoinHandle<()>> = None;
    let mut tick = tokio::time::interval(progress_interval(ack_wait));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut open = true;
    let mut settled: Vec<(Subject, Outcome)> = Vec::new();
    loop {
        tokio::select! {
            command = rx.recv(), if open => {
                // Take what else is already queued too: the acks settled meanwhile go out as
                // one batch with one confirmation.
                let mut command = command;
                loop {
                    match command {
                        Some(Command::Hold { id, reply }) => {
                            held.insert(id, reply);
                        }
                        Some(Command::Settle { id, outcome }) => {
                            if let Some(reply) = held.remove(&id) {
                                settled.push((reply, outcome));
                            }
                        }
                        None => {
                            open = false;
                            break;
                        }
                    }
                    if settled.len() >= ACK_BATCH {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(c) => command = Some(c),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => command = None,
                    }
                }
                if !settled.is_empty() {
                    acks.spawn(send_batch(client.clone(), std::mem::take(&mut settled), ack_wait, connections.clone()));
                }
            },
            Some(_) = acks.join_next(), if !acks.is_empty() => {}
            _ = tick.tick() => touch(&client, &held, &mut progress),
            // (A closed watch only disables this branch: the timers still work.)
            Ok(()) = connections.changed() => {
                // After a reconnection the last progress round may have been lost with the
                // old socket: touch everything now rather than risk an ack_wait expiry.
                touch(&client, &held, &mut progress);
            }
        }
        if !open && acks.is_empty() {
            break;
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    // NAKs and progress acks are fire-and-forget publishes: push them out before returning.
    let _ = tokio::time::timeout(ACK_TIMEOUT, client.flush()).await;
}

/// Sends one round of in-progress acks in the background, unless the previous round is
/// still going (a disconnected client buffers it; piling up rounds would help nobody).
fn touch(client: &Client, held: &HashMap<u64, Subject>, progress: &mut Option<tokio::task::JoinHandle<()>>) {
    if held.is_empty() || progress.as_ref().is_some_and(|p| !p.is_finished()) {
        return;
    }
    let replies: Vec<Subject> = held.values().cloned().collect();
    let client = client.clone();
    *progress = Some(tokio::spawn(async move {
        let payload: Bytes = AckKind::Progress.into();
        for reply in replies {
            if client.publish(reply, payload.clone()).await.is_err() {
                return;
            }
        }
        let _ = client.flush().await;
    }));
}

/// Sends a batch of settled acks and has the server confirm every one of them, with one
/// confirmation per consumer rather than one per ack.
///
/// The server handles a connection's messages in the order they arrive, and a consumer
/// processes its acks in that order too, so when it confirms the last ack of a consumer's
/// group (a "double ack", as [`send_ack`] sends) it has processed the others of the group
/// before it. They are published without a reply; only the last one waits. If the connection
/// changed meanwhile (a publish may have been lost with the old socket), or the confirmation
/// does not come, every ack of the group is sent again, each with its own confirmation.
/// An ack sent twice does no harm: the server settles a message once.
async fn send_batch(
    client: Client,
    batch: Vec<(Subject, Outcome)>,
    ack_wait: Duration,
    connections: watch::Receiver<u64>,
) {
    let mut groups: HashMap<&str, Vec<&(Subject, Outcome)>> = HashMap::new();
    for entry in &batch {
        groups.entry(consumer_of(entry.0.as_str())).or_default().push(entry);
    }
    let mut fallback: JoinSet<()> = JoinSet::new();
    let mut confirmations: JoinSet<Option<Vec<(Subject, Outcome)>>> = JoinSet::new();
    for (_, group) in groups {
        let Some(((last, last_outcome), rest)) = group.split_last() else { continue };
        let mut watch = connections.clone();
        let generation = *watch.borrow_and_update();
        let mut sent = true;
        for (reply, outcome) in rest {
            if client.publish(reply.clone(), outcome.kind().into()).await.is_err() {
                sent = false;
                break;
            }
        }
        let all: Vec<(Subject, Outcome)> = group.iter().map(|e| (*e).clone()).collect();
        if !sent {
            for (reply, outcome) in all {
                fallback.spawn(send_ack(client.clone(), reply, outcome, ack_wait, connections.clone()));
            }
            continue;
        }
        let (client, last, payload) = (client.clone(), last.clone(), Bytes::from(last_outcome.kind()));
        confirmations.spawn(async move {
            let confirmed = matches!(tokio::time::timeout(ACK_TIMEOUT, client.request(last, payload)).await, Ok(Ok(_)));
            // Confirmed on the connection the others were published on: all of them are in.
            if confirmed && *watch.borrow_and_update() == generation {
                None
            } else {
                Some(all)
            }
        });
    }
    while let Some(done) = confirmations.join_next().await {
        if let Ok(Some(again)) = done {
            tracing::debug!(acks = again.len(), "nats: a batch of acks was not confirmed; sending each again");
            for (reply, outcome) in again {
                fallback.spawn(send_ack(client.clone(), reply, outcome, ack_wait, connections.clone()));
            }
        }
    }
    while fallback.join_next().await.is_some() {}
}

/// The consumer an ack subject belongs to: `$JS.ACK.<stream>.<consumer>` followed by five
/// tokens of the message's own (delivered count, stream and consumer sequences, timestamp,
/// pending), or, in the domain-qualified form, `$JS.ACK.<domain>.<account>.<stream>.<consumer>`
/// followed by six. Any other subject is its own group (it then gets its own confirmation).
fn consumer_of(reply: &str) -> &str {
    let tokens = reply.split('.').count();
    let keep = match tokens {
        9 => 4,
        12.. => 6,
        _ => return reply,
    };
    match reply.match_indices('.').nth(keep - 1) {
        Some((at, _)) => &reply[..at],
        None => reply,
    }
}

/// Sends `outcome` and waits for the server to confirm it (a "double ack"), retrying through
/// disconnections. Past `ack_wait` the server has redelivered the message anyway, but the
/// ack still settles that redelivery, so tries go on a while longer before giving up.
async fn send_ack(
    client: Client,
    reply: Subject,
    outcome: Outcome,
    ack_wait: Duration,
    mut connections: watch::Receiver<u64>,
) {
    let payload: Bytes = outcome.kind().into();
    let give_up = tokio::time::Instant::now() + (ack_wait * 2).max(Duration::from_secs(60));
    let mut pause = Duration::from_millis(50);
    loop {
        connections.borrow_and_update();
        let error = tokio::select! {
            tried = tokio::time::timeout(ACK_TIMEOUT, client.request(reply.clone(), payload.clone())) => match tried {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no confirmation in time".to_string(),
            },
            // A confirmation lost with the old connection never comes: send again now.
            Ok(()) = connections.changed() => "reconnected".to_string(),
        };
        if tokio::time::Instant::now() + pause > give_up {
            tracing::warn!(outcome = outcome.label(), %reply, %error, "nats: giving up on an ack; the message will be delivered again");
            return;
        }
        tracing::debug!(outcome = outcome.label(), %error, "nats: ack not confirmed; retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(ACK_RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_well_within_ack_wait() {
        assert_eq!(progress_interval(Duration::from_secs(30)), Duration::from_secs(10));
        assert_eq!(progress_interval(Duration::from_millis(60)), Duration::from_millis(100));
    }

    #[test]
    fn acks_are_grouped_by_consumer() {
        let a = "$JS.ACK.CHANGES.bridge.1.10.7.1700000000000000000.3";
        let b = "$JS.ACK.CHANGES.bridge.2.11.8.1700000000000000001.2";
        let r = "$JS.ACK.CHANGES_RETRY.bridge-retry.1.4.4.1700000000000000002.0";
        let domain = "$JS.ACK.hub.ACCHASH.CHANGES.bridge.1.10.7.1700000000000000000.3.token";
        assert_eq!(consumer_of(a), "$JS.ACK.CHANGES.bridge");
        assert_eq!(consumer_of(a), consumer_of(b));
        assert_eq!(consumer_of(r), "$JS.ACK.CHANGES_RETRY.bridge-retry");
        assert_eq!(consumer_of(domain), "$JS.ACK.hub.ACCHASH.CHANGES.bridge");
        assert_eq!(consumer_of("short"), "short");
    }

    #[test]
    fn settle_maps_to_ack_kinds() {
        assert_eq!(Outcome::from(Settle::Done), Outcome::Ack);
        assert_eq!(Outcome::from(Settle::Redeliver(Duration::from_secs(4))), Outcome::Retry(Duration::from_secs(4)));
        let nak: Bytes = Outcome::Retry(Duration::from_secs(4)).kind().into();
        assert_eq!(&nak[..], b"-NAK {\"delay\":4000000000}");
        let release: Bytes = Outcome::Release.kind().into();
        assert_eq!(&release[..], b"-NAK");
    }
}
