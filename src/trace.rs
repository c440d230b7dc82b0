//! W3C Trace Context: a `traceparent` that came with an event (a transport header, or the
//! CloudEvents distributed-tracing attribute) is passed on to every request the event
//! causes, as a child span of the caller's, and its trace id is logged with the delivery.

use std::fmt;

/// A parsed `traceparent` (version 00): `00-<trace id>-<parent id>-<flags>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: String,
    span_id: String,
    flags: String,
}

impl TraceParent {
    /// Parses a header value; `None` when it is not a valid version-00 `traceparent` (an
    /// invalid one is dropped, as the specification says, rather than passed on).
    pub fn parse(value: &str) -> Option<TraceParent> {
        let mut parts = value.trim().split('-');
        let (version, trace_id, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex =
            |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let valid = version == "00"
            && parts.next().is_none()
            && hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && hex(parent, 16)
            && parent.bytes().any(|b| b != b'0')
            && hex(flags, 2);
        valid.then(|| TraceParent {
            trace_id: trace_id.to_string(),
            span_id: parent.to_string(),
            flags: flags.to_string(),
        })
    }

    /// The first valid `traceparent` among message headers: a plain `traceparent` header,
    /// or a binary-mode CloudEvents one (`ce_traceparent`, `ce-traceparent`).
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Option<TraceParent> {
        headers
            .into_iter()
            .filter(|(k, _)| {
                let k = k.to_ascii_lowercase();
                k == "traceparent" || k == "ce_traceparent" || k == "ce-traceparent"
            })
            .find_map(|(_, v)| std::str::from_utf8(v).ok().and_then(TraceParent::parse))
    }

    /// The trace id, for logs.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The span id the header names: the caller's span for an event's `traceparent`, the
    /// delivery's own span for the one hookbridge sends.
    pub fn span_id(&self) -> &str {
        &self.span_id
    }

    /// Whether the caller sampled the trace (flag bit 0).
    pub fn sampled(&self) -> bool {
        u8::from_str_radix(&self.flags, 16).is_ok_and(|f| f & 1 == 1)
    }

    /// The `traceparent` of a request made on this trace: the same trace, a new span.
    pub fn child(&self, span_id: u64) -> String {
        // A span id of zero is invalid.
        format!("00-{}-{:016x}-{}", self.trace_id, span_id.max(1), self.flags)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.trace_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_refuses_the_rest() {
        let t = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id(), "00f067aa0ba902b7");
        assert!(t.sampled());
        assert!(!TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled());
        assert_eq!(t.child(0xabc), "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01");
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn found_in_plain_and_cloudevents_headers() {
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".as_slice();
        for name in ["traceparent", "ce_traceparent", "ce-traceparent", "Traceparent"] {
            assert!(TraceParent::from_headers([("other", b"x".as_slice()), (name, v)]).is_some(), "{name}");
        }
        assert!(TraceParent::from_headers([("traceparent", b"garbage".as_slice())]).is_none());
    }
}
