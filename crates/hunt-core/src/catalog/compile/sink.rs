//! Compiling a notification sink: its URL, secret's variable and delivery settings.

use std::sync::Arc;

use super::Ctx;
use crate::catalog::{
    SINK_AGE_DEFAULT, SINK_ATTEMPTS_DEFAULT, SINK_BREAKER_FAILURES_DEFAULT,
    SINK_BREAKER_OPEN_DEFAULT, SINK_CONCURRENCY_DEFAULT, SINK_CONCURRENCY_MAX,
    SINK_TIMEOUT_DEFAULT, Sink,
};
use crate::spec::{self, Sp};

pub(super) fn compile_sink(cx: &mut Ctx, s: &spec::SinkSpec) -> Option<Sink> {
    cx.id(&s.id, "sink");
    let url = s.url.value.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
        cx.error(
            s.url.span,
            format!("sink `{}` has an invalid URL `{}`", s.id.value, s.url.value),
            Some(
                "write a full http:// or https:// URL, e.g. https://shop.example/hooks/hunt".into(),
            ),
        );
    }
    let timeout = match &s.timeout {
        Some(t) => cx.duration(t, "`timeout`")?,
        None => SINK_TIMEOUT_DEFAULT,
    };
    if let Some(env) = &s.secret_env {
        let ok = !env.value.is_empty()
            && !env.value.starts_with(|c: char| c.is_ascii_digit())
            && env
                .value
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            cx.error(
                env.span,
                format!("`{}` is not an environment variable name", env.value),
                Some(
                    "write the variable's name (e.g. HUNT_WEBHOOK_SECRET), never the secret itself"
                        .into(),
                ),
            );
        }
    }
    let mut count = |v: &Option<Sp<u64>>, what: &str, max: u64, default: u32| match v {
        None => Some(default),
        Some(n) if n.value >= 1 && n.value <= max => Some(n.value as u32),
        Some(n) => {
            cx.error(
                n.span,
                format!("`{what}` of sink `{}` must be 1 to {max}", s.id.value),
                None,
            );
            None
        }
    };
    let concurrency = count(
        &s.concurrency,
        "concurrency",
        SINK_CONCURRENCY_MAX,
        SINK_CONCURRENCY_DEFAULT,
    );
    let max_attempts = count(&s.max_attempts, "max_attempts", 1000, SINK_ATTEMPTS_DEFAULT);
    let breaker_failures = count(
        &s.breaker_failures,
        "breaker_failures",
        1000,
        SINK_BREAKER_FAILURES_DEFAULT,
    );
    let max_age = match &s.max_age {
        Some(t) => cx.duration(t, "`max_age`"),
        None => Some(SINK_AGE_DEFAULT),
    };
    let breaker_open_for = match &s.breaker_open_for {
        Some(t) => cx.duration(t, "`breaker_open_for`"),
        None => Some(SINK_BREAKER_OPEN_DEFAULT),
    };
    Some(Sink {
        id: Arc::from(s.id.value.as_str()),
        url: url.to_string(),
        timeout,
        secret_env: s.secret_env.as_ref().map(|e| e.value.clone()),
        concurrency: concurrency?,
        max_attempts: max_attempts?,
        max_age: max_age?,
        breaker_failures: breaker_failures?,
        breaker_open_for: breaker_open_for?,
    })
}
