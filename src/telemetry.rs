//! Optional OpenTelemetry export: one span per delivery, sent over OTLP/HTTP.
//!
//! Built only with the cargo feature `otlp` (off by default, so the usual binary carries no
//! OpenTelemetry code) and enabled at run time by the standard variables
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (`OTEL_SDK_DISABLED=true`
//! turns it off; `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_TRACES_SAMPLER` are
//! honoured by the SDK).
//!
//! A delivery's span has exactly the ids of the `traceparent` hookbridge sent with the request
//! (`trace.rs`): the receiver's spans hang under it, and it hangs under the span that
//! published the event. The span is recorded when the delivery's outcome is known, with its
//! start set back by the delivery's duration, so that no span is held open across retries.
//! It carries bounded, non-secret attributes only: event id, trigger, action, outcome,
//! attempts, HTTP status, failure reason and the masked URL.

use crate::output::DeliveryResult;
use crate::trace::TraceParent;

/// Where spans go, read from the OpenTelemetry environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// No endpoint configured, or the SDK disabled.
    Off,
    /// An OTLP/HTTP endpoint.
    Otlp {
        /// The traces endpoint; `None` leaves the exporter to read the variables itself.
        traces_endpoint: Option<String>,
    },
}

impl Export {
    /// Reads the standard variables through `var` (a parameter, so that tests need not change
    /// the process environment).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Export {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Export::Off;
        }
        if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
            return Export::Otlp { traces_endpoint: None };
        }
        Export::Off
    }
}

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The variables ask for OTLP export, but this binary was built without it.
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT is set, but this binary was built without the `otlp` feature")]
    NotBuiltIn,
    /// The OTLP exporter refused its configuration.
    #[cfg(feature = "otlp")]
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Keeps the exporter alive; [`Telemetry::shutdown`] sends what is buffered.
#[must_use = "spans buffered at exit are sent by shutdown()"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Starts exporting as `export` says. The process has one exporter: a second call keeps
    /// the first one's destination.
    pub fn start(export: Export) -> Result<Telemetry, TelemetryError> {
        match export {
            Export::Off => Ok(Telemetry::disabled()),
            #[cfg(not(feature = "otlp"))]
            Export::Otlp { .. } => Err(TelemetryError::NotBuiltIn),
            #[cfg(feature = "otlp")]
            Export::Otlp { traces_endpoint } => otlp::start(traces_endpoint.as_deref()),
        }
    }

    /// No export.
    pub fn disabled() -> Telemetry {
        Telemetry {
            #[cfg(feature = "otlp")]
            provider: None,
        }
    }

    /// Sends the spans still buffered and stops the exporter (blocks up to the SDK's export
    /// timeout); call it once the last delivery has been reported.
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "OTLP exporter: spans buffered at exit may be lost");
            }
        }
    }
}

/// Records the span of one delivery outcome (a no-op unless an exporter was started).
/// `sent` is the `traceparent` the request carried, `event` the one the event came with.
pub fn record_delivery(sent: Option<&str>, event: Option<&TraceParent>, result: &DeliveryResult) {
    #[cfg(feature = "otlp")]
    otlp::record(sent, event, result);
    #[cfg(not(feature = "otlp"))]
    let _ = (sent, event, result);
}

#[cfg(feature = "otlp")]
mod otlp {
    use std::sync::OnceLock;
    use std::time::{Duration, SystemTime};

    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer, TracerProvider,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
    use opentelemetry_sdk::Resource;

    use super::{Telemetry, TelemetryError};
    use crate::output::DeliveryResult;
    use crate::trace::TraceParent;

    static TRACER: OnceLock<SdkTracer> = OnceLock::new();

    pub(super) fn start(traces_endpoint: Option<&str>) -> Result<Telemetry, TelemetryError> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
        if let Some(endpoint) = traces_endpoint {
            exporter = exporter.with_endpoint(endpoint).with_timeout(Duration::from_secs(10));
        }
        let exporter = exporter.build()?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("hookbridge");
        }
        let resource = resource.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build();
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        let _ = TRACER.set(provider.tracer("hookbridge"));
        Ok(Telemetry { provider: Some(provider) })
    }

    pub(super) fn record(sent: Option<&str>, event: Option<&TraceParent>, result: &DeliveryResult) {
        let Some(tracer) = TRACER.get() else { return };
        let end = SystemTime::now();
        let start = end.checked_sub(Duration::from_millis(result.duration_ms)).unwrap_or(end);
        let mut attributes = vec![
            KeyValue::new("hookbridge.event_id", result.event_id.clone()),
            KeyValue::new("hookbridge.trigger", result.trigger.clone()),
            KeyValue::new("hookbridge.action", result.action.clone()),
            KeyValue::new("hookbridge.outcome", result.status),
            KeyValue::new("hookbridge.attempts", i64::from(result.attempts)),
        ];
        if let Some(request) = &result.request {
            attributes.push(KeyValue::new("http.request.method", request.method.clone()));
            attributes.push(KeyValue::new("url.full", request.url.clone()));
        }
        if let Some(status) = result.http_status {
            attributes.push(KeyValue::new("http.response.status_code", i64::from(status)));
        }
        if let Some(error) = &result.error {
            attributes.push(KeyValue::new("error.type", error.reason.clone()));
        }
        let mut builder = tracer
            .span_builder(format!("deliver {}", result.action))
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(attributes);
        // The span is the one the request named, so the receiver's spans join it.
        if let Some(own) = sent.and_then(TraceParent::parse) {
            builder.span_id = SpanId::from_hex(own.span_id()).ok();
        }
        let parent = match event.and_then(remote_parent) {
            Some(parent) => Context::new().with_remote_span_context(parent),
            None => Context::new(),
        };
        let mut span = builder.start_with_context(tracer, &parent);
        if let Some(error) = &result.error {
            use opentelemetry::trace::Span;
            span.set_status(Status::error(error.reason.clone()));
        }
        opentelemetry::trace::Span::end_with_timestamp(&mut span, end);
    }

    fn remote_parent(event: &TraceParent) -> Option<SpanContext> {
        let flags = if event.sampled() { TraceFlags::SAMPLED } else { TraceFlags::default() };
        Some(SpanContext::new(
            TraceId::from_hex(event.trace_id()).ok()?,
            SpanId::from_hex(event.span_id()).ok()?,
            flags,
            true,
            TraceState::default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(set: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| set.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn export_follows_the_standard_variables() {
        assert_eq!(Export::from_vars(vars(&[])), Export::Off);
        assert_eq!(Export::from_vars(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])), Export::Off);
        let on = Export::Otlp { traces_endpoint: None };
        assert_eq!(Export::from_vars(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])), on);
        assert_eq!(Export::from_vars(vars(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")])), on);
        let disabled = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_SDK_DISABLED", "TRUE")];
        assert_eq!(Export::from_vars(vars(&disabled)), Export::Off);
    }

    #[cfg(not(feature = "otlp"))]
    #[test]
    fn asking_for_otlp_without_the_feature_is_an_error() {
        let err = Telemetry::start(Export::Otlp { traces_endpoint: None }).err().expect("refused");
        assert!(matches!(err, TelemetryError::NotBuiltIn));
        assert!(Telemetry::start(Export::Off).is_ok());
    }
}
