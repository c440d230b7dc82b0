//! What a finished delivery leaves behind: its result message, the callback update of the
//! object, a dead letter when it failed for good, and their metrics.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::{Answer, DeliveryError, Dispatcher, Job, Outcome, Report};
use crate::action::Callback;
use crate::config_file::raw::CallbackWhen;
use crate::metrics;
use crate::output::{excerpt, now_rfc3339, DeadLetter, DeliveryResult, ErrorBody, ObjectUpdate, RequestSummary};
use crate::publish::PublishFailure;
use crate::request::Request;

/// Masked URLs kept for results: most deliveries go to a few URLs, and masking parses them.
const MASKED_URLS_KEPT: usize = 4096;

impl Dispatcher {
    /// The result message of a report.
    pub fn result_message(&self, job: &Job, report: &Report) -> DeliveryResult {
        let action = &self.config.actions[job.matched.action];
        let trigger = &self.config.triggers[job.matched.trigger];
        let mut request = RequestSummary {
            method: job.request.method.clone(),
            url: self.masked_url(&job.request).to_string(),
            headers: None,
            body: None,
        };
        if report.status == Outcome::DryRun {
            let shown = job.request.shown();
            request.headers = Some(shown.headers);
            request.body = Some(shown.body);
        }
        DeliveryResult {
            kind: "delivery",
            event_id: job.inflight.event.id.clone(),
            object: job.inflight.event.object_key(),
            trigger: trigger.name.clone(),
            action: action.name.clone(),
            status: report.status.as_str(),
            attempts: report.attempts,
            http_status: report.answer.as_ref().map(|a| a.status),
            duration_ms: report.duration.as_millis() as u64,
            request: Some(request),
            response_excerpt: report.answer.as_ref().map(|a| excerpt(&a.body)),
            error: report.error.as_ref().map(|e| error_body(e, report.exhausted, report.attempts)),
            webhook_id: job.request.header("webhook-id").map(str::to_string),
            mention: job.matched.mention,
            missing_placeholders: job.missing.clone(),
            time: now_rfc3339(),
        }
    }

    /// The URL as results show it, secrets masked.
    fn masked_url(&self, request: &Request) -> Arc<str> {
        let mut cache = self.masked_urls.lock().unwrap_or_else(|p| p.into_inner());
        let key = (request.url.clone(), request.host_only);
        if let Some(m) = cache.get(&key) {
            return m.clone();
        }
        if cache.len() >= MASKED_URLS_KEPT {
            cache.clear();
        }
        let masked: Arc<str> = request.masked_url().into();
        cache.insert(key, masked.clone());
        masked
    }

    /// Publishes a report's messages; `Err` when shutdown interrupted them (the outcome is
    /// then not final: the message is read again after a restart).
    pub(super) async fn publish_report(&self, job: &Job, report: &Report) -> Result<(), PublishFailure> {
        let action = &self.config.actions[job.matched.action];
        let trigger = &self.config.triggers[job.matched.trigger];
        // A delivery handed to the retry stage is not over: its result comes when it is.
        if report.status == Outcome::RetryScheduled {
            return Ok(());
        }
        let key = job.inflight.event.object_key();
        let m = metrics::get();
        m.deliveries.with_label_values(&[&action.name, action.kind.as_str(), report.status.as_str()]).inc();
        m.delivery_duration.with_label_values(&[&action.name]).observe(report.duration.as_secs_f64());
        let result = self.result_message(job, report);
        crate::telemetry::record_delivery(
            job.request.header("traceparent"),
            job.inflight.event.trace.as_ref(),
            &result,
        );
        keep_going(self.publisher.response(&key, &result, &self.shutdown).await)?;
        if let (Some(cb), Some(answer)) = (&action.callback, &report.answer) {
            if report.status == Outcome::Delivered || cb.when == CallbackWhen::AnyResponse {
                if let Some(update) = self.callback_update(job, cb, answer) {
                    m.callback_updates.with_label_values(&[&action.name]).inc();
                    keep_going(self.publisher.response(&key, &update, &self.shutdown).await)?;
                }
            }
        }
        if report.status == Outcome::Failed {
            let error = result.error.clone().unwrap_or(ErrorBody { reason: "failed".into(), detail: String::new() });
            tracing::warn!(
                event_id = %job.inflight.event.id,
                webhook_id = result.webhook_id.as_deref().unwrap_or(""),
                trace_id = job.trace_id(),
                http_status = report.answer.as_ref().map(|a| a.status),
                trigger = %trigger.name,
                action = %action.name,
                attempts = report.attempts,
                reason = %error.reason,
                detail = %error.detail,
                "delivery failed for good; dead-lettered"
            );
            let letter = DeadLetter {
                reason: &error.reason,
                detail: &error.detail,
                source: &job.inflight.coords,
                raw: &job.inflight.payload,
                event_id: Some(&job.inflight.event.id),
                trigger: Some(&trigger.name),
                action: Some(&action.name),
            };
            keep_going(self.publisher.dead_letter(&key, letter, &self.shutdown).await)?;
        }
        Ok(())
    }

    /// Evaluates a callback mapping over an answer.
    pub fn callback_update(&self, job: &Job, cb: &Callback, answer: &Answer) -> Option<ObjectUpdate> {
        let action = &self.config.actions[job.matched.action];
        let event = &job.inflight.event;
        let body = serde_json::from_slice::<Value>(&answer.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer.body).into_owned()));
        let headers: Map<String, Value> = answer.headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let response = json!({"status": answer.status, "headers": headers, "body": body});
        let object = Value::Object(event.object.clone());
        let previous = Value::Object(event.previous.clone());
        let mut fields = Map::new();
        for (code, expr) in &cb.fields {
            match expr.eval(&[
                ("response", &response),
                ("event", &event.document),
                ("object", &object),
                ("previous", &previous),
            ]) {
                Ok(v) => {
                    fields.insert(code.clone(), v);
                }
                Err(e) => {
                    metrics::get().callback_errors.with_label_values(&[&action.name]).inc();
                    tracing::warn!(action = %action.name, field = %code, error = %e, "callback field failed to evaluate");
                }
            }
        }
        if fields.is_empty() {
            return None;
        }
        Some(ObjectUpdate {
            kind: "object_update",
            event_id: event.id.clone(),
            trigger: self.config.triggers[job.matched.trigger].name.clone(),
            action: action.name.clone(),
            class: event.class.clone(),
            key: event.key.clone(),
            fields,
            time: now_rfc3339(),
        })
    }
}

/// A message the destination refuses for good was logged and counted by the publisher; the
/// delivery's outcome stands (its result, when that was what failed, cannot be had any other
/// way). Only an interruption stops here.
fn keep_going(r: Result<(), PublishFailure>) -> Result<(), PublishFailure> {
    match r {
        Err(PublishFailure::Interrupted) => Err(PublishFailure::Interrupted),
        _ => Ok(()),
    }
}

fn error_body(error: &DeliveryError, exhausted: bool, attempts: u32) -> ErrorBody {
    let detail = error.detail();
    ErrorBody {
        reason: error.reason().into_owned(),
        detail: if exhausted { format!("{detail} (after {attempts} attempts)") } else { detail },
    }
}
