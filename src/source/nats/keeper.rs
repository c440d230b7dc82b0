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
    loop {
        tokio::select! {
            command = rx.recv(), if open => match command {
                Some(Command::Hold { id, reply }) => {
                    held.insert(id, reply);
                }
                Some(Command::Settle { id, outcome }) => {
                    if let Some(reply) = held.remove(&id) {
                        acks.spawn(send_ack(client.clone(), reply, outcome, ack_wait, connections.clone()));
                    }
                }
                None => open = false,
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
    fn settle_maps_to_ack_kinds() {
        assert_eq!(Outcome::from(Settle::Done), Outcome::Ack);
        assert_eq!(Outcome::from(Settle::Redeliver(Duration::from_secs(4))), Outcome::Retry(Duration::from_secs(4)));
        let nak: Bytes = Outcome::Retry(Duration::from_secs(4)).kind().into();
        assert_eq!(&nak[..], b"-NAK {\"delay\":4000000000}");
        let release: Bytes = Outcome::Release.kind().into();
        assert_eq!(&release[..], b"-NAK");
    }
}
