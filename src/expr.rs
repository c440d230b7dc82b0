//! CEL expressions (`condition`, `callback.fields`), compiled once at load and evaluated
//! over JSON variables (`event`, `object`, `previous`, `response`).

use cel::{Context, Program};
use serde_json::Value;

/// A compiled expression and its source, for messages.
pub struct Expression {
    source: String,
    program: Program,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expression({:?})", self.source)
    }
}

impl Expression {
    /// Compiles `source`; every variable it reads must be in `allowed`.
    pub fn compile(source: &str, allowed: &[&str]) -> Result<Expression, String> {
        let program =
            Program::compile(source).map_err(|e| format!("invalid CEL expression: {}", e.to_string().trim()))?;
        let references = program.references();
        let bound = macro_variables(source);
        let unknown: Vec<&str> = references
            .variables()
            .into_iter()
            .filter(|v| {
                !allowed.contains(v) && !bound.iter().any(|b| b == v) && !v.starts_with('@') && !v.starts_with("__")
            })
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "unknown variable{} {} (available: {})",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.join(", "),
                allowed.join(", ")
            ));
        }
        Ok(Expression { source: source.to_string(), program })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates with the given variables and returns the result as JSON.
    pub fn eval(&self, vars: &[(&str, &Value)]) -> Result<Value, String> {
        let mut ctx = Context::default();
        for (name, value) in vars {
            ctx.add_variable(*name, *value).map_err(|e| format!("cannot bind {name}: {e}"))?;
        }
        let result = self.program.execute(&ctx).map_err(|e| e.to_string())?;
        result.json().map_err(|e| format!("result is not JSON: {e:?}"))
    }

    /// Evaluates a condition: anything but a boolean is an error.
    pub fn eval_bool(&self, vars: &[(&str, &Value)]) -> Result<bool, String> {
        match self.eval(vars)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!("condition must be a boolean, got {other}")),
        }
    }
}

/// Names bound by comprehension macros (`list.map(x, …)`, `all`, `exists`, `exists_one`,
/// `filter`): they are variables inside the macro, not inputs.
fn macro_variables(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["map", "filter", "all", "exists", "exists_one", "transformList", "transformMap"] {
        let pattern = format!(".{name}(");
        let mut rest = source;
        while let Some(i) = rest.find(&pattern) {
            rest = &rest[i + pattern.len()..];
            let args = rest.trim_start();
            let ident: String = args.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let after = args[ident.len()..].trim_start();
            if !ident.is_empty() && after.starts_with(',') {
                out.push(ident);
                // Two-variable forms bind a second name.
                let second = after[1..].trim_start();
                let ident2: String = second.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !ident2.is_empty() && second[ident2.len()..].trim_start().starts_with(',') {
                    out.push(ident2);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compiles_and_evaluates() {
        let e = Expression::compile(r#"object.priority == "1" && "Ticket" in event.ancestors"#, &["event", "object"])
            .unwrap();
        let ev = json!({"ancestors": ["Ticket"]});
        assert!(e.eval_bool(&[("event", &ev), ("object", &json!({"priority": "1"}))]).unwrap());
        assert!(!e.eval_bool(&[("event", &ev), ("object", &json!({"priority": "2"}))]).unwrap());
    }

    #[test]
    fn map_macro_over_response_body() {
        let e =
            Expression::compile("response.body.objects.map(k, response.body.objects[k].fields.ref)[0]", &["response"])
                .unwrap();
        let r = json!({"status": 200, "body": {"objects": {"UserRequest::45": {"fields": {"ref": "R-000045"}}}}});
        assert_eq!(e.eval(&[("response", &r)]).unwrap(), json!("R-000045"));
    }

    #[test]
    fn rejects_bad_syntax_and_unknown_variables() {
        let err = Expression::compile("object.priority ==", &["object"]).unwrap_err();
        assert!(err.starts_with("invalid CEL expression"), "{err}");
        let err = Expression::compile("objekt.priority == 1", &["object", "event"]).unwrap_err();
        assert!(err.contains("objekt"), "{err}");
    }
}
