//! An event in flight: the message's data, shared read-only by its deliveries (`Sync`),
//! and, apart from it, the acknowledgement that waits for all of them.

use std::sync::Mutex;

use tokio::sync::OwnedSemaphorePermit;

use super::lanes::Seq;
use crate::event::Event;
use crate::metrics;
use crate::source::{Ack, Coords, Message, RetryInfo, Settle};

/// What every delivery of a message may read.
pub struct InFlight {
    /// The parsed event.
    pub event: Event,
    /// The original bytes (dead letters, the durable retry stage).
    pub payload: Vec<u8>,
    /// The original transport headers (the durable retry stage).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Source coordinates (of the original message, for a retry record).
    pub coords: Coords,
    /// Where the original message sits in its source, for lane order.
    pub seq: Seq,
    /// The retry record this message is, if it is one.
    pub retry: Option<RetryInfo>,
    settlement: Mutex<Settlement>,
}

struct Settlement {
    remaining: usize,
    ack: Option<Ack>,
    /// The read-ahead this message holds (events and bytes), given back with its ack.
    room: Vec<OwnedSemaphorePermit>,
}

impl InFlight {
    /// Takes the message apart; `count` deliveries must complete before its ack is settled
    /// and the read-ahead `room` it holds is given back.
    pub fn new(
        event: Event,
        message: Message,
        count: usize,
        room: impl IntoIterator<Item = OwnedSemaphorePermit>,
    ) -> InFlight {
        let seq = seq_of(&message.coords);
        let retry = message.retry.and_then(Result::ok);
        InFlight {
            event,
            payload: message.payload,
            headers: message.headers,
            coords: message.coords,
            seq,
            retry,
            settlement: Mutex::new(Settlement {
                remaining: count,
                ack: Some(message.ack),
                room: room.into_iter().collect(),
            }),
        }
    }

    /// Records one delivery's final outcome (delivered, failed and dead-lettered, skipped, or
    /// safely in the durable retry stage); the last one releases the source position.
    /// A delivery interrupted by shutdown never calls this: its message stays unsettled and
    /// is read again after a restart.
    pub fn complete(&self) {
        let mut s = self.settlement.lock().unwrap_or_else(|p| p.into_inner());
        s.remaining = s.remaining.saturating_sub(1);
        if s.remaining == 0 {
            // Every outcome for this message is final and every result was published before
            // we got here: only now may the position move.
            if let Some(ack) = s.finish() {
                ack.settle(Settle::Done);
            }
        }
    }

    /// The message waits in lane parking (see [`Ack::with_hold`]). It gives its read-ahead
    /// room back: held messages are bounded by lane parking itself, and the deliveries they
    /// wait for must be able to come in.
    pub fn hold(&self) {
        let mut s = self.settlement.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ack) = s.ack.as_mut() {
            ack.hold();
        }
        s.room.clear();
    }

    /// The message is let go unsettled: lane parking keeps only a reference to it, and the
    /// stage, which keeps the record, reads it again at its turn. Its acknowledgement is
    /// dropped, so the source position stays before it, and its read-ahead room is given back.
    pub fn let_go(&self) {
        let unsettled = self.settlement.lock().unwrap_or_else(|p| p.into_inner()).finish();
        drop(unsettled);
    }

    /// A copy of the message for the durable retry stage, without its acknowledgement.
    pub fn message_copy(&self) -> Message {
        Message {
            payload: self.payload.clone(),
            headers: self.headers.clone(),
            coords: self.coords.clone(),
            ack: Ack::none(),
            retry: self.retry.clone().map(Ok),
        }
    }
}

impl Settlement {
    /// The message leaves the pipeline: its ack (to settle, or to drop unsettled), once; the
    /// read-ahead room it held is given back.
    fn finish(&mut self) -> Option<Ack> {
        self.room.clear();
        let ack = self.ack.take();
        if ack.is_some() {
            metrics::get().events_pending.dec();
        }
        ack
    }
}

/// The place of a message in its source, read from its coordinates.
pub fn seq_of(coords: &Coords) -> Seq {
    let (a, b) = coords.order();
    Seq(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn assert_sync<T: Sync + Send>() {}

    #[test]
    fn the_data_is_shared_and_the_ack_waits_for_every_delivery() {
        assert_sync::<InFlight>();
        let settled = Arc::new(AtomicUsize::new(0));
        let s = settled.clone();
        let message = Message {
            payload: b"{}".to_vec(),
            headers: Vec::new(),
            coords: Coords::Kafka { topic: "t".into(), partition: 2, offset: 9, retry: None },
            ack: Ack::new(move |how| {
                assert_eq!(how, Settle::Done);
                s.fetch_add(1, Ordering::SeqCst);
            }),
            retry: None,
        };
        let event = crate::event::parse_event(
            br#"{"id":"e","time":"2024-01-01T00:00:00Z","operation":"create","class":"C","key":1,"object":{}}"#,
            None,
        )
        .unwrap();
        metrics::get().events_pending.inc();
        let f = InFlight::new(event, message, 2, None);
        assert_eq!(f.seq, Seq(2, 9));
        f.complete();
        assert_eq!(settled.load(Ordering::SeqCst), 0);
        f.complete();
        assert_eq!(settled.load(Ordering::SeqCst), 1);
        f.complete();
        assert_eq!(settled.load(Ordering::SeqCst), 1, "settled once");
    }
}
