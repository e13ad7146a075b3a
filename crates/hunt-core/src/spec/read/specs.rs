//! Reading each spec of a hunts file from its mapping, field by field.

use crate::diag::{Problem, Span, did_you_mean};
use crate::spec::{
    ActiveSpec, EventSpec, GenerateSpec, HuntSpec, HuntsFile, Order, PoolSpec, RewardSpec,
    Settings, SinkSpec, Sp, StepSpec, TestEventSpec, TestSpec,
};
use crate::yaml::{Node, Value};

use super::Reader;

impl Reader<'_> {
    pub(super) fn hunts_file(&mut self, root: &Node) -> Option<HuntsFile> {
        let what = "the hunts file";
        let obj = self.obj(root, "HuntsFile", what)?;
        let version = match obj.get("version") {
            Some(n) => self.uint(n, "`version`"),
            None => {
                let span = self.key_span(&obj);
                self.problems.push(
                    Problem::error(span, "the hunts file is missing `version`")
                        .with_help("add `version: 1` at the top"),
                );
                None
            }
        };
        if let Some(v) = &version
            && v.value != 1
        {
            self.problems.push(
                Problem::error(v.span, format!("unsupported version {}", v.value))
                    .with_help("this engine reads `version: 1`"),
            );
        }
        let settings = match obj.get("settings") {
            Some(n) if n.value != Value::Null => self.settings(n).unwrap_or_default(),
            _ => Settings::default(),
        };
        let pools = self
            .list(&obj, "pools", what)
            .iter()
            .filter_map(|n| self.pool(n))
            .collect();
        let sinks = self
            .list(&obj, "sinks", what)
            .iter()
            .filter_map(|n| self.sink(n))
            .collect();
        let events = self
            .list(&obj, "events", what)
            .iter()
            .filter_map(|n| self.event(n))
            .collect();
        let hunts = self
            .list(&obj, "hunts", what)
            .iter()
            .filter_map(|n| self.hunt(n))
            .collect();
        let tests = self
            .list(&obj, "tests", what)
            .iter()
            .filter_map(|n| self.test(n))
            .collect();
        Some(HuntsFile {
            version: version.unwrap_or(Sp::new(1, Span::default())),
            settings,
            pools,
            sinks,
            events,
            hunts,
            tests,
        })
    }

    fn event(&mut self, node: &Node) -> Option<EventSpec> {
        let what = "an event declaration";
        let obj = self.obj(node, "EventSpec", what)?;
        let kind = self.req_text(&obj, "type", what);
        let data = match obj.get("data") {
            Some(n) => match &n.value {
                Value::Seq(items) => Some(
                    items
                        .iter()
                        .filter_map(|c| self.text(c, "a `data` field name"))
                        .collect(),
                ),
                _ => {
                    self.error(
                        n.span,
                        format!(
                            "`data` of an event declaration must be a list of field names, found {}",
                            n.kind()
                        ),
                    );
                    None
                }
            },
            None => {
                let span = self.key_span(&obj);
                self.problems.push(
                    Problem::error(span, "an event declaration is missing `data`")
                        .with_help("list the fields its `data` carries: `data: [product, price]`"),
                );
                None
            }
        };
        Some(EventSpec {
            kind: kind?,
            data: data?,
        })
    }

    fn settings(&mut self, node: &Node) -> Option<Settings> {
        let obj = self.obj(node, "Settings", "`settings`")?;
        Some(Settings {
            max_lateness: self.opt_scalar_text(&obj, "max_lateness", "`settings`"),
        })
    }

    fn pool(&mut self, node: &Node) -> Option<PoolSpec> {
        let what = "a pool";
        let obj = self.obj(node, "PoolSpec", what)?;
        let id = self.req_text(&obj, "id", what);
        let description = self.opt_string(&obj, "description", what).map(|s| s.value);
        let codes = obj.get("codes").and_then(|n| match &n.value {
            Value::Seq(items) => Some(
                items
                    .iter()
                    .filter_map(|c| self.text(c, "a pool code"))
                    .collect(),
            ),
            _ => {
                self.error(
                    n.span,
                    format!("`codes` of a pool must be a list, found {}", n.kind()),
                );
                None
            }
        });
        let generate = obj.get("generate").and_then(|n| self.generate(n));
        Some(PoolSpec {
            id: id?,
            description,
            codes,
            generate,
        })
    }

    fn generate(&mut self, node: &Node) -> Option<GenerateSpec> {
        let what = "`generate`";
        let obj = self.obj(node, "GenerateSpec", what)?;
        let prefix = match obj.get("prefix") {
            Some(n) => self.text(n, "`prefix`").map(|s| s.value),
            None => Some(String::new()),
        };
        let count = match obj.get("count") {
            Some(n) => self.uint(n, "`count` of `generate`"),
            None => {
                self.missing(&obj, "count", what);
                None
            }
        };
        let digits = self.opt_uint(&obj, "digits", what);
        let start = self.opt_uint(&obj, "start", what).map(|s| s.value);
        Some(GenerateSpec {
            prefix: prefix?,
            count: count?,
            digits,
            start,
        })
    }

    fn sink(&mut self, node: &Node) -> Option<SinkSpec> {
        let what = "a sink";
        let obj = self.obj(node, "SinkSpec", what)?;
        let id = self.req_text(&obj, "id", what);
        let url = self.req_text(&obj, "url", what);
        let timeout = self.opt_scalar_text(&obj, "timeout", what);
        let secret_env = self.opt_string(&obj, "secret_env", what);
        Some(SinkSpec {
            id: id?,
            url: url?,
            timeout,
            secret_env,
            concurrency: self.opt_uint(&obj, "concurrency", what),
            max_attempts: self.opt_uint(&obj, "max_attempts", what),
            max_age: self.opt_scalar_text(&obj, "max_age", what),
            breaker_failures: self.opt_uint(&obj, "breaker_failures", what),
            breaker_open_for: self.opt_scalar_text(&obj, "breaker_open_for", what),
        })
    }

    fn hunt(&mut self, node: &Node) -> Option<HuntSpec> {
        let what = "a hunt";
        let obj = self.obj(node, "HuntSpec", what)?;
        let id = self.req_text(&obj, "id", what);
        let title = self.opt_string(&obj, "title", what).map(|s| s.value);
        let description = self.opt_string(&obj, "description", what).map(|s| s.value);
        let active = obj
            .get("active")
            .filter(|n| n.value != Value::Null)
            .and_then(|n| {
                let a = self.obj(n, "ActiveSpec", "`active`")?;
                Some(ActiveSpec {
                    from: self.opt_scalar_text(&a, "from", "`active`"),
                    until: self.opt_scalar_text(&a, "until", "`active`"),
                })
            });
        let audience = self.opt_string(&obj, "audience", what);
        let order = match obj.get("order") {
            None => Order::Any,
            Some(n) => match &n.value {
                Value::Str(s) if s == "any" => Order::Any,
                Value::Str(s) if s == "sequence" => Order::Sequence,
                _ => {
                    let found = match &n.value {
                        Value::Str(s) => format!("`{s}`"),
                        _ => n.kind().to_string(),
                    };
                    let mut p = Problem::error(
                        n.span,
                        format!("`order` must be `any` or `sequence`, found {found}"),
                    );
                    if let Value::Str(s) = &n.value
                        && let Some(m) = did_you_mean(s, ["any", "sequence"])
                    {
                        p = p.with_help(format!("did you mean `{m}`?"));
                    }
                    self.problems.push(p);
                    Order::Any
                }
            },
        };
        if obj.get("steps").is_none() {
            self.missing(&obj, "steps", what);
        }
        let steps = self
            .list(&obj, "steps", what)
            .iter()
            .filter_map(|n| self.step(n))
            .collect();
        let complete_after = self.opt_uint(&obj, "complete_after", what);
        let reward = obj
            .get("reward")
            .filter(|n| n.value != Value::Null)
            .and_then(|n| {
                let r = self.obj(n, "RewardSpec", "`reward`")?;
                let pool = self.req_text(&r, "pool", "`reward`");
                let per_user = self.opt_uint(&r, "per_user", "`reward`");
                Some(RewardSpec {
                    pool: pool?,
                    per_user,
                })
            });
        let max_winners = self.opt_uint(&obj, "max_winners", what);
        let notify = self
            .list(&obj, "notify", what)
            .iter()
            .filter_map(|n| self.text(n, "a sink id in `notify`"))
            .collect();
        Some(HuntSpec {
            id: id?,
            title,
            description,
            active,
            audience,
            order,
            steps,
            complete_after,
            reward,
            max_winners,
            notify,
        })
    }

    fn step(&mut self, node: &Node) -> Option<StepSpec> {
        let what = "a step";
        let obj = self.obj(node, "StepSpec", what)?;
        let id = self.req_text(&obj, "id", what);
        let on = self.req_text(&obj, "on", what);
        let when = match obj.get("when") {
            // `when: true` is a condition too.
            Some(n) if matches!(n.value, Value::Bool(_)) => self.text(n, "`when`"),
            _ => self.opt_string(&obj, "when", what),
        };
        let count = self.opt_uint(&obj, "count", what);
        let within = self.opt_scalar_text(&obj, "within", what);
        let clue = self.opt_string(&obj, "clue", what).map(|s| s.value);
        Some(StepSpec {
            id: id?,
            on: on?,
            when,
            count,
            within,
            clue,
        })
    }

    fn test(&mut self, node: &Node) -> Option<TestSpec> {
        let what = "a test case";
        let obj = self.obj(node, "TestSpec", what)?;
        let name = self.req_text(&obj, "name", what);
        let start = self.opt_scalar_text(&obj, "start", what);
        if obj.get("events").is_none() {
            self.missing(&obj, "events", what);
        }
        let events = self
            .list(&obj, "events", what)
            .iter()
            .filter_map(|n| self.test_event(n))
            .collect();
        if obj.get("expect").is_none() {
            self.missing(&obj, "expect", what);
        }
        let expect = self
            .list(&obj, "expect", what)
            .iter()
            .filter_map(|n| self.string(n, "an expected outcome"))
            .collect();
        Some(TestSpec {
            name: name?,
            start,
            events,
            expect,
        })
    }

    fn test_event(&mut self, node: &Node) -> Option<TestEventSpec> {
        let what = "a test event";
        let obj = self.obj(node, "TestEventSpec", what)?;
        let user = self.req_text(&obj, "user", what);
        let kind = self.req_text(&obj, "type", what);
        let id = obj
            .get("id")
            .and_then(|n| self.text(n, "`id` of a test event"))
            .map(|s| s.value);
        let at = self.opt_scalar_text(&obj, "at", what);
        let data = self.json_map(&obj, "data", what);
        let traits = self.json_map(&obj, "traits", what);
        Some(TestEventSpec {
            user: user?,
            kind: kind?,
            id,
            at,
            data,
            traits,
        })
    }
}
