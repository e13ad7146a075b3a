//! Connecting to a NATS cluster, creating or joining a cluster's stream, and refusing
//! settings that would break a promise.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The oldest `nats-server` accepted: 2.12 (atomic batches; 2.9.21 fixed a race in the
/// expected-sequence check this log's fencing rests on).
pub const NATS_SERVER_MIN: (u64, u64, u64) = (2, 12, 0);
/// Partitions of a new cluster unless asked otherwise.
pub const PARTITIONS_DEFAULT: u32 = 64;
/// The stream's metadata key that keeps the partition count.
const META_PARTITIONS: &str = "hunt.partitions";

/// How to reach a cluster and what to expect of it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS client URLs (`nats://host:port`); any of them is enough to connect.
    pub servers: Vec<String>,
    /// The cluster's name: letters, digits, `-` and `_`. It names the stream
    /// (`HUNT_<name>`) and the subjects (`hunt.<name>.p.<n>`).
    pub name: String,
    /// The partition count. A new cluster stores it (default 64); joining, it must match
    /// what is stored (`None`: take what is stored).
    pub partitions: Option<u32>,
    /// Replicas of the stream (3 by default). Fewer in place is refused.
    pub replicas: usize,
    /// The servers' monitoring URLs (`http://host:port`), read to check that each syncs
    /// every write (`jetstream { sync_interval: always }`).
    pub monitor: Vec<String>,
    /// Run even without proof that the servers sync every write: an acknowledged event
    /// may then be lost if every replica loses power at once.
    pub accept_lazy_fsync: bool,
    /// Create the stream if it is missing (a node); `false` for a reader, which
    /// refuses a missing cluster instead ([`ClusterError::NoCluster`]).
    pub create: bool,
    /// How long an append may wait for the stream's acknowledgement, retries included.
    /// Above a Raft election: when a stream's leader is lost, nats-server's followers
    /// wait 4-9 s before they campaign, so 20 s covers one election and a second round.
    pub ack_timeout: Duration,
}

/// Default [`ClusterConfig::ack_timeout`].
pub const ACK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(20);
/// How long one try of a request (a publish, a bucket's read or write) waits for its
/// answer before it is sent again: a message published while a stream has no leader
/// gets no answer at all, and waits for nothing.
pub const TRY_TIMEOUT: Duration = Duration::from_secs(4);

impl ClusterConfig {
    pub fn new(servers: Vec<String>, name: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            servers,
            name: name.into(),
            partitions: None,
            replicas: 3,
            monitor: Vec::new(),
            accept_lazy_fsync: false,
            create: true,
            ack_timeout: ACK_TIMEOUT_DEFAULT,
        }
    }
}

/// Why a cluster could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "the cluster name {0:?} is not allowed: use letters, digits, '-' and '_' (it names the stream and subjects)"
    )]
    BadName(String),
    #[error("no NATS server could be reached at {servers}: {detail}")]
    Connect { servers: String, detail: String },
    #[error(
        "the NATS server {server} is version {version}; the engine needs {min} or newer (its fencing and batches rely on it)"
    )]
    ServerTooOld {
        server: String,
        version: String,
        min: String,
    },
    #[error("the NATS server {0} has JetStream off; start it with a `jetstream` block")]
    NoJetStream(String),
    #[error(
        "stream {stream} has {has} replicas but {asked} were asked: an answer would not survive the loss of the machines the missing replicas stand for"
    )]
    Replicas {
        stream: String,
        asked: usize,
        has: usize,
    },
    #[error(
        "stream {stream} was created with {stored} partitions, not {asked}; a cluster's partition count is fixed when it is created"
    )]
    Partitions {
        stream: String,
        stored: u32,
        asked: u32,
    },
    #[error(
        "cannot show that the NATS servers sync every write: {0}. Set `jetstream {{ sync_interval: always }}` on every server and give their monitoring URLs, or pass --accept-lazy-fsync to run without that promise"
    )]
    LazyFsync(String),
    #[error(
        "there is no cluster named {name} on these servers (no stream {stream}); check --cluster-name"
    )]
    NoCluster { name: String, stream: String },
    #[error("NATS: {0}")]
    Nats(String),
}

fn nats(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Nats(e.to_string())
}

/// A connection to a cluster whose stream exists and passed the checks.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) js: jetstream::Context,
    pub(crate) stream: String,
    name: String,
    prefix: String,
    partitions: u32,
    pub(crate) ack_timeout: Duration,
    pub(crate) max_payload: usize,
    metrics: std::sync::Arc<crate::metrics::ClusterMetrics>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("stream", &self.stream)
            .field("partitions", &self.partitions)
            .finish()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `"2.12.8"` (or `"v2.12.8-beta"`) as numbers.
fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

impl Cluster {
    /// Connects, checks the server and the sync setting, and creates the cluster's
    /// stream or checks the one in place.
    pub async fn connect(cfg: &ClusterConfig) -> Result<Cluster, ClusterError> {
        if !valid_name(&cfg.name) {
            return Err(ClusterError::BadName(cfg.name.clone()));
        }
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(TRY_TIMEOUT.min(cfg.ack_timeout)))
            .connect(cfg.servers.clone())
            .await
            .map_err(|e| ClusterError::Connect {
                servers: cfg.servers.join(","),
                detail: e.to_string(),
            })?;
        let info = client.server_info();
        let min = format!(
            "{}.{}.{}",
            NATS_SERVER_MIN.0, NATS_SERVER_MIN.1, NATS_SERVER_MIN.2
        );
        match parse_version(&info.version) {
            Some(v) if v >= NATS_SERVER_MIN => {}
            _ => {
                return Err(ClusterError::ServerTooOld {
                    server: info.server_name.clone(),
                    version: info.version.clone(),
                    min,
                });
            }
        }
        if !info.jetstream {
            return Err(ClusterError::NoJetStream(info.server_name.clone()));
        }
        if !cfg.accept_lazy_fsync {
            check_sync_always(&cfg.monitor).await?;
        }
        let mut js = jetstream::new(client);
        js.set_timeout(TRY_TIMEOUT.min(cfg.ack_timeout));
        let stream = format!("HUNT_{}", cfg.name);
        let prefix = format!("hunt.{}", cfg.name);
        let partitions = ensure_stream(&js, &stream, &prefix, cfg).await?;
        Ok(Cluster {
            js,
            stream,
            name: cfg.name.clone(),
            prefix,
            partitions,
            ack_timeout: cfg.ack_timeout,
            max_payload: info.max_payload,
            metrics: Default::default(),
        })
    }

    /// The key-value bucket `bucket` (one value per key, on file), created with
    /// `replicas` if absent; another node creating it meanwhile is fine.
    pub(crate) async fn kv_bucket(
        &self,
        bucket: &str,
        replicas: usize,
    ) -> Result<async_nats::jetstream::kv::Store, ClusterError> {
        for_a_while(|| async {
            let kv = match self.js.get_key_value(bucket).await {
                Ok(kv) => kv,
                // Absent, or another node creating it meanwhile (the next look finds it).
                Err(_) => self
                    .js
                    .create_key_value(async_nats::jetstream::kv::Config {
                        bucket: bucket.to_string(),
                        history: 1,
                        num_replicas: replicas,
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| ClusterError::Nats(format!("creating bucket {bucket}: {e}")))?,
            };
            // A bucket just created (by this node or another starting with it) answers
            // reads only once its stream has a leader: waited for here, so that the
            // node's first reads do not fail with "no responders".
            kv.entry("ready")
                .await
                .map_err(|e| ClusterError::Nats(format!("reading bucket {bucket}: {e}")))?;
            Ok(kv)
        })
        .await
    }

    /// The key-value bucket `bucket` if it exists (`None`: its stream is not found;
    /// an error: the servers did not answer), for readers that must create nothing.
    pub(crate) async fn existing_kv(
        &self,
        bucket: &str,
    ) -> Result<Option<async_nats::jetstream::kv::Store>, ClusterError> {
        match self.js.get_key_value(bucket).await {
            Ok(kv) => Ok(Some(kv)),
            Err(e) => match self.js.get_stream(format!("KV_{bucket}")).await {
                Err(g)
                    if matches!(g.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
                {
                    Ok(None)
                }
                _ => Err(ClusterError::Nats(format!(
                    "reading the bucket {bucket}: {e}"
                ))),
            },
        }
    }

    /// The partition count stored with the cluster.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// This node's figures of its life on the cluster.
    pub fn metrics(&self) -> &std::sync::Arc<crate::metrics::ClusterMetrics> {
        &self.metrics
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The subject of `partition`'s log.
    pub fn subject(&self, partition: u32) -> String {
        format!("{}.p.{partition}", self.prefix)
    }

    /// A connection to the cluster's servers, for requests outside the stream.
    pub fn client(&self) -> async_nats::Client {
        self.js.client()
    }

    /// The subject on which the owner answers requests that reached another node.
    pub fn forward_subject(&self) -> String {
        format!("{}.forward", self.prefix)
    }

    /// The subjects of every partition.
    pub(crate) fn all_subjects(&self) -> String {
        format!("{}.p.*", self.prefix)
    }
}

/// Asks `f` again every 250 ms while it fails, for up to 30 s: servers just started
/// may not all be known to the meta leader yet, and a busy machine may not answer in
/// time. Its last error after that.
pub(crate) async fn for_a_while<T, E, F, Fut>(mut f: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Err(_) if std::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            done => return done,
        }
    }
}

async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    prefix: &str,
    cfg: &ClusterConfig,
) -> Result<u32, ClusterError> {
    let mut existing = for_a_while(|| async {
        match js.get_stream(name).await {
            Ok(s) => Ok(Some(s)),
            Err(e)
                if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(e) => Err(nats(e)),
        }
    })
    .await?;
    if existing.is_none() && !cfg.create {
        return Err(ClusterError::NoCluster {
            name: cfg.name.clone(),
            stream: name.to_string(),
        });
    }
    if existing.is_none() {
        let partitions = cfg.partitions.unwrap_or(PARTITIONS_DEFAULT);
        let config = stream::Config {
            name: name.to_string(),
            subjects: vec![format!("{prefix}.p.*")],
            num_replicas: cfg.replicas,
            storage: stream::StorageType::File,
            allow_direct: true,
            duplicate_window: Duration::from_secs(120),
            metadata: HashMap::from([(META_PARTITIONS.to_string(), partitions.to_string())]),
            ..Default::default()
        };
        // Servers just started may not all be known to the meta leader as online yet
        // ("no suitable peers", 10005; on a busy machine this took over 10 s): asked
        // again for up to 30 s before the error is given.
        let until = std::time::Instant::now() + Duration::from_secs(30);
        let created = loop {
            match js.create_stream(config.clone()).await {
                Err(e)
                    if matches!(e.kind(), jetstream::context::CreateStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode(10005))
                        && std::time::Instant::now() < until =>
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => break other,
            }
        };
        match created {
            Ok(s) => existing = Some(s),
            // Another node may have created it meanwhile: check that one.
            Err(create) => match js.get_stream(name).await {
                Ok(s) => existing = Some(s),
                Err(_) => {
                    return Err(ClusterError::Nats(format!(
                        "creating stream {name} with {} replicas: {create}",
                        cfg.replicas
                    )));
                }
            },
        }
    }
    let mut s = existing.expect("created or found");
    let info = s.info().await.map_err(nats)?;
    let configured = info.config.num_replicas;
    let actual = info.cluster.as_ref().map_or(1, |c| 1 + c.replicas.len());
    let has = configured.min(actual);
    if has < cfg.replicas {
        return Err(ClusterError::Replicas {
            stream: name.to_string(),
            asked: cfg.replicas,
            has,
        });
    }
    let stored = info
        .config
        .metadata
        .get(META_PARTITIONS)
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| {
            ClusterError::Nats(format!(
                "stream {name} has no partition count in its metadata: it was not created by this engine"
            ))
        })?;
    if let Some(asked) = cfg.partitions
        && asked != stored
    {
        return Err(ClusterError::Partitions {
            stream: name.to_string(),
            stored,
            asked,
        });
    }
    Ok(stored)
}

/// Reads each server's `/varz` and checks `jetstream.config.sync_always`.
async fn check_sync_always(monitor: &[String]) -> Result<(), ClusterError> {
    if monitor.is_empty() {
        return Err(ClusterError::LazyFsync(
            "no monitoring URL was given (--cluster-monitor)".into(),
        ));
    }
    for url in monitor {
        let varz = http_get_json(url, "/varz")
            .await
            .map_err(|e| ClusterError::LazyFsync(format!("{url}/varz: {e}")))?;
        let cfg = &varz["jetstream"]["config"];
        if cfg["sync_always"] != serde_json::Value::Bool(true) {
            let name = varz["server_name"].as_str().unwrap_or("?");
            return Err(ClusterError::LazyFsync(format!(
                "server {name} ({url}) syncs every {} s, not every write",
                cfg["sync_interval"].as_u64().unwrap_or(0) / 1_000_000_000
            )));
        }
    }
    Ok(())
}

/// A plain HTTP GET of a JSON document (a NATS monitoring endpoint).
async fn http_get_json(base: &str, path: &str) -> Result<serde_json::Value, String> {
    let hostport = base
        .strip_prefix("http://")
        .ok_or("only http:// monitoring URLs are read")?
        .trim_end_matches('/');
    let connect = tokio::net::TcpStream::connect(hostport);
    let mut conn = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| "timed out connecting".to_string())?
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n");
    conn.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut body))
        .await
        .map_err(|_| "timed out reading".to_string())?
        .map_err(|e| e.to_string())?;
    let split = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header end")?;
    if !body.starts_with(b"HTTP/1.") || !body[..split].windows(5).any(|w| w == b" 200 ") {
        let line = String::from_utf8_lossy(&body[..split.min(80)]).into_owned();
        return Err(format!("answered {line:?}"));
    }
    serde_json::from_slice(&body[split + 4..]).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_names() {
        assert_eq!(parse_version("2.12.8"), Some((2, 12, 8)));
        assert_eq!(parse_version("v2.9.10"), Some((2, 9, 10)));
        assert_eq!(parse_version("2.14.0-beta.1"), Some((2, 14, 0)));
        assert_eq!(parse_version("two"), None);
        assert!(parse_version("2.9.10").unwrap() < NATS_SERVER_MIN);
        assert!(parse_version("2.12.0").unwrap() >= NATS_SERVER_MIN);
        assert!(valid_name("shop-1_eu"));
        for bad in ["", "a.b", "a b", "a*", "a>"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
