//! CEL expressions (`condition`, `callback.fields`), compiled once at load and evaluated
//! over JSON variables (`event`, `object`, `previous`, `response`).

use std::sync::{Arc, OnceLock};

use cel::{Context, Env, Program};
use serde_json::Value;

/// The standard library every evaluation runs with, built once: building it takes longer
/// than evaluating a typical condition.
fn stdlib() -> Arc<Env> {
    static STDLIB: OnceLock<Arc<Env>> = OnceLock::new();
    STDLIB.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

/// Longest expression accepted: conditions and callback fields are short.
const MAX_SOURCE: usize = 4096;
/// Deepest nesting of brackets accepted.
const MAX_NESTING: usize = 16;
/// Most operators accepted: a chain of them nests as deep as it is long.
const MAX_OPERATORS: usize = 48;
/// Stack of the thread the parser runs on.
const PARSER_STACK: usize = 256 << 20;

/// Refuses expressions too long or too deeply nested to parse and evaluate safely: the
/// evaluator recurses over the expression on the delivery threads, whose stacks are small.
fn check_size(source: &str) -> Result<(), String> {
    if source.len() > MAX_SOURCE {
        return Err(format!("expression too long ({} bytes, at most {MAX_SOURCE})", source.len()));
    }
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut operators = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut prev = ' ';
    for c in source.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '(' | '[' | '{' => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                // One count per operator (`&&`, `==`, `<=` count once), and per `.` and `,`.
                '+' | '-' | '*' | '/' | '%' | '?' | ':' | '.' | ',' | '!' => operators += 1,
                '&' | '|' | '=' | '<' | '>' if !matches!(prev, '&' | '|' | '=' | '<' | '>' | '!') => operators += 1,
                _ => {}
            },
        }
        prev = c;
    }
    if operators > MAX_OPERATORS {
        return Err(format!("expression too complex ({operators} operators, at most {MAX_OPERATORS})"));
    }
    if deepest > MAX_NESTING {
        return Err(format!("expression nested too deeply ({deepest} levels of brackets, at most {MAX_NESTING})"));
    }
    Ok(())
}

/// A compiled expression and its source, for messages.
pub struct Expression {
    source: String,
    program: Program,
    /// The input variables the expression reads: only those are converted to CEL values
    /// when it is evaluated (a condition on `object` need not convert the whole `event`),
    /// each with the top-level fields it reads when that is all it does with the variable.
    reads: Vec<(String, Option<Vec<String>>)>,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expression({:?})", self.source)
    }
}

impl Expression {
    /// Compiles `source`; every variable it reads must be in `allowed`.
    pub fn compile(source: &str, allowed: &[&str]) -> Result<Expression, String> {
        check_size(source)?;
        // The CEL parser recurses deeply for each level of nesting (a debug build overflows
        // a 2 MiB stack at 16 parentheses): it runs on a thread with a stack to spare.
        let owned = source.to_string();
        let compiled = std::thread::Builder::new()
            .name("cel-compile".into())
            .stack_size(PARSER_STACK)
            .spawn(move || Program::compile(&owned).map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot compile the expression: {e}"))?
            .join()
            .map_err(|_| "the CEL parser failed on this expression".to_string())?;
        let program = compiled.map_err(|e| format!("invalid CEL expression: {}", e.trim()))?;
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
        let reads = allowed
            .iter()
            .filter(|a| references.has_variable(a))
            .map(|a| (a.to_string(), fields_read(source, a)))
            .collect();
        Ok(Expression { source: source.to_string(), program, reads })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates with the given variables and returns the result as JSON.
    pub fn eval(&self, vars: &[(&str, &Value)]) -> Result<Value, String> {
        let mut ctx = Context::with_env(stdlib());
        for (name, value) in vars {
            let Some((_, fields)) = self.reads.iter().find(|(r, _)| r == name) else { continue };
            let bound = match (fields, value.as_object()) {
                // Only the fields read are converted: the others cannot change the result.
                (Some(fields), Some(map)) => {
                    let part = fields.iter().filter_map(|f| map.get_key_value(f)).map(|(k, v)| (k.clone(), v.clone()));
                    ctx.add_variable(*name, Value::Object(part.collect()))
                }
                _ => ctx.add_variable(*name, *value),
            };
            bound.map_err(|e| format!("cannot bind {name}: {e}"))?;
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

/// The top-level fields of variable `name` that `source` reads, when every use of `name` is
/// a plain field selection `name.field` (not a method or macro such as `name.all(…)`, not
/// `name[…]`, not `size(name)`); `None` otherwise, and then the whole value is bound. An
/// occurrence inside a string literal only makes this give up, never miss a field.
fn fields_read(source: &str, name: &str) -> Option<Vec<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut fields: Vec<String> = Vec::new();
    for (at, _) in source.match_indices(name) {
        let before = source[..at].chars().next_back();
        let after = &source[at + name.len()..];
        if before.is_some_and(ident) || after.starts_with(ident) {
            continue; // part of a longer identifier
        }
        let rest = after.trim_start().strip_prefix('.')?.trim_start();
        let field: String = rest.chars().take_while(|c| ident(*c)).collect();
        if field.is_empty() || rest[field.len()..].trim_start().starts_with('(') {
            return None;
        }
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    Some(fields)
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
    fn only_the_fields_read_are_bound_and_the_result_is_the_same() {
        assert_eq!(
            fields_read(r#"object.priority == "1" && has(object.team)"#, "object"),
            Some(vec!["priority".into(), "team".into()])
        );
        assert_eq!(fields_read("objects.x == 1 && myobject.y", "object"), Some(vec![]));
        // Anything but a plain field selection binds the whole value.
        for whole in ["size(object) > 1", "object.all(k, k != \"x\")", "object[\"a\"] == 1", "object.x == \"object\""] {
            assert_eq!(fields_read(whole, "object"), None, "{whole}");
        }
        let object = json!({"priority": "1", "team": {"name": "Ops"}, "other": [1, 2, 3]});
        for (source, expected) in [
            (r#"object.priority == "1" && object.team.name == "Ops""#, true),
            ("has(object.missing)", false),
            ("size(object) == 3", true),
            ("object.exists(k, k == \"other\")", true),
        ] {
            let e = Expression::compile(source, &["object"]).unwrap();
            assert_eq!(e.eval_bool(&[("object", &object)]).unwrap(), expected, "{source}");
        }
        // A field that is not there is still an error, as with the whole value bound.
        let e = Expression::compile("object.missing == 1", &["object"]).unwrap();
        assert!(e.eval_bool(&[("object", &object)]).is_err());
    }

    #[test]
    fn rejects_bad_syntax_and_unknown_variables() {
        let err = Expression::compile("object.priority ==", &["object"]).unwrap_err();
        assert!(err.starts_with("invalid CEL expression"), "{err}");
        let err = Expression::compile("objekt.priority == 1", &["object", "event"]).unwrap_err();
        assert!(err.contains("objekt"), "{err}");
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    /// Found while preparing the CEL fuzz target: the parser and evaluator recurse per level, and
    /// a few dozen levels overflowed the 2 MiB stack of a delivery thread.
    #[test]
    fn deep_or_long_expressions_are_refused_and_the_largest_accepted_runs_on_a_small_stack() {
        let deep = format!("{}1{}", "(".repeat(17), ")".repeat(17));
        assert!(Expression::compile(&deep, &[]).unwrap_err().contains("nested too deeply"));
        let chain = vec!["1"; 50].join(" + ");
        assert!(Expression::compile(&chain, &[]).unwrap_err().contains("too complex"));
        let long = format!("\"{}\" == \"x\"", "a".repeat(5000));
        assert!(Expression::compile(&long, &[]).unwrap_err().contains("too long"));
        // Brackets and operators inside strings do not count.
        Expression::compile(&format!("\"{}\" == \"x\"", "((+)".repeat(100)), &[]).unwrap();
        let largest = format!("{}{}{}", "(".repeat(16), vec!["1"; 48].join(" + "), ")".repeat(16));
        let e = Expression::compile(&largest, &[]).unwrap();
        let value = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || e.eval(&[]).unwrap())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(value, serde_json::json!(48));
    }
}
