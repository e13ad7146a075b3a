//! `hunt dlq`: the dead-letter queue of a running server, through its admin API.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::render;

#[derive(clap::Args)]
pub struct Args {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// An admin API key (or set HUNT_API_KEY). Not needed by a server without keys.
    #[arg(long, global = true)]
    key: Option<String>,
    /// Print the server's JSON answer instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Default)]
struct FilterArgs {
    /// Only this sink's dead letters.
    #[arg(long)]
    sink: Option<String>,
    /// Only this hunt's.
    #[arg(long)]
    hunt: Option<String>,
    /// Dead-lettered at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Dead-lettered before this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
}

#[derive(clap::Args)]
struct Select {
    /// One dead letter, by id.
    id: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
}

#[derive(clap::Subcommand)]
enum Command {
    /// List dead letters in the order of their events (the log's order, not the time
    /// they died).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One delivery (dead or pending): its history and the CloudEvent it carries.
    Show { id: String },
    /// Send dead letters back to be delivered, with their keys and history.
    Retry(Select),
    /// Remove dead letters for good.
    Drop(Select),
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    async fn call(&self, req: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let req = match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        };
        let r = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the server at {}: {e}", self.base))?;
        let status = r.status().as_u16();
        let bytes = r.bytes().await?;
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Ok((status, v))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.trim_end_matches('/'))
    }
}

fn filter_json(f: &FilterArgs) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for (k, v) in [
        ("sink", &f.sink),
        ("hunt", &f.hunt),
        ("since", &f.since),
        ("until", &f.until),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    m
}

fn selection(s: &Select) -> anyhow::Result<Value> {
    let filter = filter_json(&s.filter);
    match (&s.id, filter.is_empty(), s.all) {
        (Some(id), true, false) => Ok(json!({ "id": id })),
        (None, false, false) => Ok(Value::Object(filter)),
        (None, true, true) => Ok(json!({ "all": true })),
        (None, true, false) => {
            anyhow::bail!(
                "say which dead letters: an id, a filter (--sink, --hunt, --since, --until) or --all"
            )
        }
        _ => anyhow::bail!("give one of an id, a filter or --all, not several"),
    }
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    hunt_server::notify::install_tls_provider();
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()?,
        base: args.server.clone(),
        key: args
            .key
            .clone()
            .or_else(|| std::env::var("HUNT_API_KEY").ok()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, v) = rt.block_on(request(&client, &args.command))?;
    if !(200..300).contains(&status) {
        let msg = v["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text(&v));
        eprintln!("error: the server answered {status}: {msg}");
        return Ok(ExitCode::from(1));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    show(&args.command, &v)
}

/// Percent-encodes what a path segment cannot hold as is.
fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The request a command makes: the status and the JSON answered.
async fn request(client: &Client, command: &Command) -> anyhow::Result<(u16, Value)> {
    match command {
        Command::List { filter, limit } => {
            let mut q: Vec<String> = filter_json(filter)
                .into_iter()
                .map(|(k, v)| format!("{k}={}", percent(&text(&v))))
                .collect();
            q.push(format!("limit={limit}"));
            let path = format!("/v1/dlq?{}", q.join("&"));
            client.call(client.http.get(client.url(&path))).await
        }
        Command::Show { id } => {
            let path = format!("/v1/dlq/{}", percent(id));
            client.call(client.http.get(client.url(&path))).await
        }
        Command::Retry(s) | Command::Drop(s) => {
            let verb = if matches!(command, Command::Retry(_)) {
                "retry"
            } else {
                "drop"
            };
            let body = selection(s)?;
            client
                .call(
                    client
                        .http
                        .post(client.url(&format!("/v1/dlq/{verb}")))
                        .header("content-type", "application/json")
                        .body(body.to_string()),
                )
                .await
        }
    }
}

/// A successful answer, for a person.
fn show(command: &Command, v: &Value) -> anyhow::Result<ExitCode> {
    match command {
        Command::List { .. } => {
            let entries = v["entries"].as_array().cloned().unwrap_or_default();
            if entries.is_empty() {
                println!("no dead letters");
                return Ok(ExitCode::SUCCESS);
            }
            let mut t =
                render::table(&["id", "sink", "hunt", "dead since", "attempts", "last error"]);
            for e in &entries {
                t.add_row(vec![
                    text(&e["id"]),
                    text(&e["sink"]),
                    text(&e["hunt"]),
                    text(&e["dead_at"]),
                    text(&e["attempts"]),
                    short(&text(&e["last_error"]), 70),
                ]);
            }
            println!("{t}");
            println!("{} shown of {}", entries.len(), text(&v["total"]));
        }
        Command::Show { .. } => {
            let mut t = render::table(&["delivery", ""]);
            for k in [
                "id",
                "state",
                "sink",
                "hunt",
                "queued_at",
                "dead_at",
                "attempts",
            ] {
                t.add_row(vec![k.to_string(), text(&v[k])]);
            }
            println!("{t}");
            let mut h = render::table(&["at", "error"]);
            for a in v["history"].as_array().cloned().unwrap_or_default() {
                h.add_row(vec![text(&a["at"]), text(&a["error"])]);
            }
            println!("{h}");
            println!("{}", serde_json::to_string_pretty(&v["event"])?);
        }
        Command::Retry(_) => println!("retried {}", text(&v["retried"])),
        Command::Drop(_) => println!("dropped {}", text(&v["dropped"])),
    }
    Ok(ExitCode::SUCCESS)
}
