//! The CEL interpreter path: the input as CEL values, and the program run over them.

use std::sync::Arc;

use serde_json::Value as Json;

use super::Input;

thread_local! {
    /// The standard environment, built once per thread (building it is not cheap).
    static ENV: Arc<cel::Env> = Arc::new(cel::Env::stdlib());
}

pub(super) fn eval_cel(program: &cel::Program, input: &Input) -> Result<bool, String> {
    let env = ENV.with(Arc::clone);
    let mut ctx = cel::Context::with_env(env);
    if let Some(ev) = input.event {
        let mut m = std::collections::HashMap::new();
        m.insert(key("id"), cel::Value::String(Arc::new(ev.id.to_string())));
        m.insert(
            key("type"),
            cel::Value::String(Arc::new(ev.kind.to_string())),
        );
        m.insert(key("time"), cel::Value::Timestamp(ev.time.to_chrono()));
        m.insert(key("data"), json_map_to_cel(ev.data));
        ctx.add_variable_from_value(
            "event",
            cel::Value::Map(cel::objects::Map { map: Arc::new(m) }),
        );
    }
    let mut u = std::collections::HashMap::new();
    u.insert(
        key("id"),
        cel::Value::String(Arc::new(input.user_id.to_string())),
    );
    let traits = input
        .traits
        .iter()
        .map(|(k, v)| (key(k), json_to_cel(v)))
        .collect();
    u.insert(
        key("traits"),
        cel::Value::Map(cel::objects::Map {
            map: Arc::new(traits),
        }),
    );
    ctx.add_variable_from_value(
        "user",
        cel::Value::Map(cel::objects::Map { map: Arc::new(u) }),
    );
    if let Some(p) = input.progress {
        let steps: std::collections::HashMap<_, _> = p
            .step_ids
            .iter()
            .zip(p.counts)
            .map(|(id, n)| (key(id), cel::Value::Int(i64::from(*n))))
            .collect();
        let mut m = std::collections::HashMap::new();
        m.insert(key("found"), cel::Value::Int(i64::from(p.found)));
        m.insert(
            key("steps"),
            cel::Value::Map(cel::objects::Map {
                map: Arc::new(steps),
            }),
        );
        ctx.add_variable_from_value(
            "progress",
            cel::Value::Map(cel::objects::Map { map: Arc::new(m) }),
        );
    }
    // A panic inside the interpreter is a failed evaluation, never a crash of the engine.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| program.execute(&ctx)))
        .map_err(|_| "the CEL interpreter failed".to_string())?;
    match result {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!(
            "condition gave {:?}, not a boolean",
            other.type_of()
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn key(s: &str) -> cel::objects::Key {
    cel::objects::Key::String(Arc::new(s.to_string()))
}

fn json_map_to_cel(m: &serde_json::Map<String, Json>) -> cel::Value {
    let map = m.iter().map(|(k, v)| (key(k), json_to_cel(v))).collect();
    cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
}

/// JSON to CEL: integers that fit `i64` are `int`, larger ones `uint`, others `double`.
pub fn json_to_cel(v: &Json) -> cel::Value {
    match v {
        Json::Null => cel::Value::Null,
        Json::Bool(b) => cel::Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => cel::Value::String(Arc::new(s.clone())),
        Json::Array(a) => cel::Value::List(Arc::new(a.iter().map(json_to_cel).collect())),
        Json::Object(m) => json_map_to_cel(m),
    }
}
