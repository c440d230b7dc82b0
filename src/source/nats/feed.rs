//! Where fetched messages go: each one registered with the keeper, wrapped as a [`Message`]
//! with its [`Ack`], and sent to the pipeline; retry records not yet due are postponed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Batch;
use async_nats::jetstream::Message as JsMessage;
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::keeper::Keeper;
use super::retry;
use crate::source::{Ack, Coords, Message};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Events,
    Retries,
}

/// Where fetched messages go: registered with the keeper, then sent to the pipeline.
pub(super) struct Feed<'a> {
    pub(super) tx: &'a mpsc::Sender<Message>,
    pub(super) keeper: &'a Keeper,
    pub(super) room: Arc<Semaphore>,
    pub(super) ids: AtomicU64,
    pub(super) shutdown: &'a CancellationToken,
}

/// The JetStream coordinates of a fetched message; `None` (logged) without metadata.
pub(super) fn metadata(msg: &JsMessage) -> Option<(String, u64, u64)> {
    match msg.info() {
        Ok(info) => Some((info.stream.to_string(), info.stream_sequence, info.delivered as u64)),
        Err(e) => {
            tracing::warn!(error = %e, subject = %msg.subject, "nats: message without JetStream metadata skipped");
            None
        }
    }
}

pub(super) fn headers_of(msg: &JsMessage) -> Vec<(String, Vec<u8>)> {
    msg.headers
        .iter()
        .flat_map(|h| h.iter())
        .flat_map(|(name, values)| values.iter().map(move |v| (name.to_string(), v.as_str().as_bytes().to_vec())))
        .collect()
}

impl Feed<'_> {
    /// One message as the pipeline sees it; `None` if it is not to be handled now (no
    /// JetStream metadata, or a retry record that is not due yet).
    pub(super) fn message(&self, kind: Kind, msg: JsMessage, room: Option<OwnedSemaphorePermit>) -> Option<Message> {
        match kind {
            Kind::Events => self.event(msg, room),
            Kind::Retries => self.retry_record(msg, room),
        }
    }

    fn event(&self, msg: JsMessage, room: Option<OwnedSemaphorePermit>) -> Option<Message> {
        let (stream, sequence, delivered) = metadata(&msg)?;
        let reply = msg.reply.clone()?;
        // A redelivery of the source message (after a crash or a lost ack) charges no attempts:
        // attempts are counted per action, in the retry records of the actions that failed.
        let held = self.keeper.hold(self.ids.fetch_add(1, Ordering::Relaxed), reply, room);
        Some(Message {
            coords: coords_of(&msg, stream, sequence, delivered),
            headers: headers_of(&msg),
            payload: msg.message.payload.to_vec(),
            // The ack is settled by the pipeline only once every outcome for this message is
            // final (delivered, failed and dead-lettered, or stored in the retry stream); the
            // keeper confirms it with the server. Dropping it unsettled NAKs it so another
            // replica can take it.
            ack: Ack::new(move |how| held.settle(how)),
            retry: None,
        })
    }

    /// A record of the retry stream: handed over when due, with the original message's
    /// headers and coordinates; NAKed with the remaining delay when not.
    fn retry_record(&self, msg: JsMessage, room: Option<OwnedSemaphorePermit>) -> Option<Message> {
        let (stream, sequence, delivered) = metadata(&msg)?;
        let reply = msg.reply.clone()?;
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let payload = msg.message.payload.to_vec();
        let returned = match retry::decode(headers_of(&msg)) {
            Ok(r) => r,
            Err(reason) => {
                // Handed over as it is: the pipeline dead-letters it with the reason. Never run
                // as a new event (its other actions were delivered), never dropped in silence.
                tracing::warn!(%reason, stream = %stream, sequence, "nats: unreadable retry record");
                let held = self.keeper.hold(id, reply, room);
                return Some(Message {
                    coords: coords_of(&msg, stream.clone(), sequence, delivered),
                    headers: headers_of(&msg),
                    payload,
                    ack: Ack::new(move |how| held.settle(how)),
                    retry: Some(Err(reason)),
                });
            }
        };
        let wait_ms = returned.not_before_ms - chrono::Utc::now().timestamp_millis();
        tracing::debug!(
            sequence,
            delivered,
            id = msg.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.as_str()).unwrap_or(""),
            event_sequence = returned.origin.sequence,
            action = %returned.info.action,
            attempts = returned.info.attempts,
            wait_ms,
            "nats: retry record read"
        );
        if wait_ms > 0 {
            // Not due: JetStream holds it until then; it takes no room meanwhile.
            drop(room);
            self.keeper.hold(id, reply, None).postpone(Duration::from_millis(wait_ms as u64));
            return None;
        }
        let held = self.keeper.hold(id, reply, room);
        Some(Message {
            coords: returned.origin.coords(&stream, sequence),
            headers: returned.headers,
            payload,
            // Acked once this delivery is final, or once its next record is stored.
            ack: Ack::new(move |how| held.settle(how)),
            retry: Some(Ok(returned.info)),
        })
    }
}

/// A message's own coordinates in its stream.
pub(super) fn coords_of(msg: &JsMessage, stream: String, sequence: u64, delivered: u64) -> Coords {
    Coords::Nats { stream, subject: msg.subject.to_string(), sequence, delivered: Some(delivered), retry: None }
}

impl Feed<'_> {
    /// Wraps and sends one message; `false` when the pipeline is gone or shutting down.
    pub(super) async fn hand_over(&self, kind: Kind, m: JsMessage, permits: &mut Vec<OwnedSemaphorePermit>) -> bool {
        // The server never sends more than asked; if it did, the message is held anyway.
        let permit = permits.pop().or_else(|| self.room.clone().try_acquire_owned().ok());
        let Some(message) = self.message(kind, m, permit) else {
            return true;
        };
        tokio::select! {
            sent = self.tx.send(message) => sent.is_ok(),
            _ = self.shutdown.cancelled() => false,
        }
    }
}

/// The messages of a batch that have already arrived, without waiting for more.
pub(super) fn arrived(batch: &mut Batch) -> Vec<JsMessage> {
    let mut out = Vec::new();
    while let Some(Some(Ok(m))) = batch.next().now_or_never() {
        out.push(m);
    }
    out
}

/// Waits for room for at least one message, then takes what else is free, up to `batch`.
pub(super) async fn reserve(
    room: &Arc<Semaphore>,
    batch: usize,
    shutdown: &CancellationToken,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        _ = shutdown.cancelled() => return None,
        p = room.clone().acquire_owned() => p.ok()?,
    };
    let mut permits = vec![first];
    while permits.len() < batch {
        match room.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
    Some(permits)
}
