//! Compiled triggers: which (trigger, action) pairs an event sets off, in config order.

use std::collections::HashMap;

use serde_json::Value;

use crate::config_file::raw::{ActionConfig, TriggerConfig, TriggerOn};
use crate::config_file::Problems;
use crate::event::{Event, Operation};
use crate::expr::Expression;

/// Variables a trigger condition may read.
pub const CONDITION_VARIABLES: [&str; 3] = ["event", "object", "previous"];

/// A compiled trigger.
#[derive(Debug)]
pub struct Trigger {
    /// Name in the config.
    pub name: String,
    /// What it fires on.
    pub on: TriggerOn,
    /// Final class or ancestor it applies to.
    pub class: String,
    /// State entered or left (state triggers).
    pub state: Option<String>,
    /// Watched attributes (update) or case-log attributes (log_update); empty = any.
    pub attributes: Vec<String>,
    /// Optional CEL filter.
    pub condition: Option<Expression>,
    /// Origin tags it is limited to; empty = any.
    pub context: Vec<String>,
    /// Indexes into `Config::actions`, in order.
    pub actions: Vec<usize>,
    /// Mention triggers: contacts notified per event at most (`delivery.max_mentions`).
    pub max_mentions: usize,
}

/// One (trigger, action) pair set off by an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Index into `Config::triggers`.
    pub trigger: usize,
    /// Index into `Config::actions`.
    pub action: usize,
    /// For mention triggers: which entry of `event.mentions` this pair is for. An index at
    /// or past the trigger's `max_mentions` stands for all the mentions left out (see
    /// `Trigger::skips_mention`).
    pub mention: Option<usize>,
}

/// What went wrong evaluating a condition; the event is not matched by that trigger.
#[derive(Debug, Clone)]
pub struct ConditionError {
    /// Trigger name.
    pub trigger: String,
    /// The evaluation error.
    pub message: String,
}

/// Checks and compiles one trigger.
pub fn compile(
    place: &str,
    raw: &TriggerConfig,
    action_index: &HashMap<String, Option<usize>>,
    raw_actions: &[ActionConfig],
    problems: &mut Problems,
) -> Option<Trigger> {
    let before = problems.mark();
    let is_state = matches!(raw.on, TriggerOn::StateEnter | TriggerOn::StateLeave);
    match (&raw.state, is_state) {
        (None, true) => problems.add(format!("{place}.state"), format!("required for on: {}", raw.on.as_str())),
        (Some(_), false) => problems.add(
            format!("{place}.state"),
            format!("only state_enter and state_leave triggers take a state, this one is on: {}", raw.on.as_str()),
        ),
        _ => {}
    }
    if !raw.attributes.is_empty() && !matches!(raw.on, TriggerOn::Update | TriggerOn::LogUpdate) {
        problems.add(format!("{place}.attributes"), "only update and log_update triggers watch attributes");
    }
    let condition = raw.condition.as_deref().and_then(|src| match Expression::compile(src, &CONDITION_VARIABLES) {
        Ok(e) => Some(e),
        Err(e) => {
            problems.add(format!("{place}.condition"), e);
            None
        }
    });
    if raw.actions.is_empty() {
        problems.add(format!("{place}.actions"), "a trigger needs at least one action");
    }
    let mut actions = Vec::new();
    for (j, name) in raw.actions.iter().enumerate() {
        match action_index.get(name) {
            None => problems.add(format!("{place}.actions[{j}]"), format!("no action named {name:?}")),
            Some(&index) => {
                if raw.on == TriggerOn::LogUpdate {
                    let kind =
                        raw_actions.iter().find(|a| &a.name == name).map(|a| a.kind().as_str()).unwrap_or("webhook");
                    problems.add(
                        format!("{place}.actions[{j}]"),
                        format!("a log_update trigger is reserved for e-mail replies and cannot run the {kind} action {name:?}"),
                    );
                } else if let Some(i) = index {
                    // `None`: the action failed to compile and was reported there.
                    actions.push(i);
                }
            }
        }
    }
    if problems.added_since(before) {
        return None;
    }
    Some(Trigger {
        name: raw.name.clone(),
        on: raw.on,
        class: raw.class.clone(),
        state: raw.state.clone(),
        attributes: raw.attributes.clone(),
        condition,
        context: raw.context.clone(),
        actions,
        max_mentions: crate::config_file::raw::DeliveryConfig::default().max_mentions,
    })
}

impl Trigger {
    /// Whether the pair for this mention index stands for the mentions beyond
    /// `max_mentions`, which are not notified.
    pub fn skips_mention(&self, mention: Option<usize>) -> bool {
        self.on == TriggerOn::Mention && mention.is_some_and(|i| i >= self.max_mentions)
    }

    /// Whether this trigger fires for `event`, leaving the condition aside.
    fn fires_on(&self, event: &Event) -> bool {
        if !event.is_a(&self.class) {
            return false;
        }
        if !self.context.is_empty() && !event.context.iter().any(|c| self.context.contains(c)) {
            return false;
        }
        let state = event.state.as_ref();
        match self.on {
            TriggerOn::Create => event.operation == Operation::Create,
            TriggerOn::Update => {
                // A case-log entry changes its attribute even when `changed` leaves it out.
                event.operation == Operation::Update
                    && (self.attributes.is_empty()
                        || event.changed.iter().any(|c| self.attributes.contains(c))
                        || event.log.as_ref().is_some_and(|l| self.attributes.contains(&l.attribute)))
            }
            TriggerOn::Delete => event.operation == Operation::Delete,
            TriggerOn::StateEnter => state.is_some_and(|s| s.to.is_some() && s.to == self.state && s.from != s.to),
            TriggerOn::StateLeave => state.is_some_and(|s| s.from.is_some() && s.from == self.state && s.from != s.to),
            TriggerOn::Mention => !event.mentions.is_empty(),
            TriggerOn::LogUpdate => {
                event.log.as_ref().is_some_and(|l| self.attributes.is_empty() || self.attributes.contains(&l.attribute))
            }
        }
    }
}

/// The (trigger, action) pairs `event` sets off, in trigger then action order; a mention
/// trigger yields one pair per mentioned contact, up to its `max_mentions`, then one pair
/// per action for all the others (planned as skipped, reason `too_many_mentions`), so one
/// event never costs more than `max_mentions` requests per action. Conditions that fail to
/// evaluate are returned beside the matches (the trigger does not fire).
pub fn match_event(triggers: &[Trigger], event: &Event) -> (Vec<Match>, Vec<ConditionError>) {
    let mut matches = Vec::new();
    let mut errors = Vec::new();
    let empty = Value::Object(Default::default());
    // The event's JSON document holds `object` and `previous` as values already: borrowed,
    // not rebuilt from the parsed maps for every event.
    let doc = |k: &str| event.document.get(k).filter(|v| v.as_object().is_some_and(|m| !m.is_empty()));
    let mut vars: Option<(&Value, &Value)> = None;
    for (ti, t) in triggers.iter().enumerate() {
        if !t.fires_on(event) {
            continue;
        }
        if let Some(cond) = &t.condition {
            let (object, previous) =
                *vars.get_or_insert_with(|| (doc("object").unwrap_or(&empty), doc("previous").unwrap_or(&empty)));
            match cond.eval_bool(&[("event", &event.document), ("object", object), ("previous", previous)]) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(message) => {
                    errors.push(ConditionError { trigger: t.name.clone(), message });
                    continue;
                }
            }
        }
        let mentions: Vec<Option<usize>> = if t.on == TriggerOn::Mention {
            let shown = event.mentions.len().min(t.max_mentions);
            let mut m: Vec<Option<usize>> = (0..shown).map(Some).collect();
            if event.mentions.len() > shown {
                crate::metrics::get()
                    .mentions_skipped
                    .with_label_values(&[&t.name])
                    .inc_by((event.mentions.len() - shown) as u64);
                tracing::warn!(
                    trigger = %t.name,
                    event_id = %event.id,
                    mentions = event.mentions.len(),
                    max_mentions = t.max_mentions,
                    "mentions beyond max_mentions are not notified"
                );
                m.push(Some(shown));
            }
            m
        } else {
            vec![None]
        };
        for mention in mentions {
            for &action in &t.actions {
                matches.push(Match { trigger: ti, action, mention });
            }
        }
    }
    (matches, errors)
}

#[cfg(test)]
mod tests;
