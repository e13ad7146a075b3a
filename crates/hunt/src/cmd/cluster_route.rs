//! Nodes whose partitions are spread over the cluster send each other work over NATS
//! core request-reply (ADR 0015, step 5): the NATS side of the server's
//! [`Router`](hunt_server::route::Router).
//!
//! The subjects, `<c>` being the cluster's name, every payload JSON:
//! - `hunt.<c>.rpc.p<n>`: work for partition n, answered by the node that hosts it. A
//!   [`Request`]: `{"kind": "events", "events": [[index, event], …]}` (one partition's
//!   events of one HTTP request, in their order) or `{"kind": "user", "user": …}`. The
//!   reply, a [`Reply`]: `{"kind": "statuses", "statuses": [[index, id, status], …]}`
//!   (each status a [`Routed`], sent once durable on the owner), `{"kind": "user",
//!   "view": …|null}`, or `{"kind": "refused", "why": …}`.
//! - `hunt.<c>.rpc.giveback`: `{"from": node, "key": account}`, published and not
//!   answered: every other node asks its partitions to give back what they hold unused
//!   of the escrow account.
//! - `hunt.<c>.rpc.gather`: `{"from": node, "ask": {"winners_of": [hunt, limit]|null}}`
//!   with a reply inbox: every other node replies `{"node": …, "share": …}` with its
//!   share of the hunt-wide figures ([`Share`]).
//!
//! No responder on a partition's subject, or no answer within [`ROUTE_TIMEOUT`]: its
//! events are refused with the code `moving` for a retry (ingest is idempotent: an
//! event the owner did apply is answered as a duplicate with its first answer). A
//! gather waits at most [`GATHER_TIMEOUT`], and names the live nodes that did not
//! answer.
//!
//! Owns: [`NatsRouter`], the asking side, and [`Responder`], which serves the
//! partitions this node hosts, a set that may change while it runs ([`Responder::host`],
//! [`Responder::release`]).
//! Must never: answer an event or a customer it did not get from the local service's
//! own entry points for routed work (`ingest_routed`, `user_routed`, which apply only
//! the partitions the node owns, dedupe them, and answer once durable), or take a
//! missing answer for anything but a refusal. Anyone who can publish on these subjects
//! can post events: the NATS servers must be as closed as the HTTP listener.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::{Client, Message, Subscriber, client::RequestErrorKind};
use futures_util::StreamExt;
use hunt_core::engine::Event;
use hunt_server::escrow::BoxFuture;
use hunt_server::partition::Status;
use hunt_server::route::{Ask, Gathered, Routed, Router, Share, Statuses, UserView};
use hunt_server::service::Service;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, Semaphore, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// How long an owner may take to answer a partition's work: above a round's commit
/// (group commit and a stream's acknowledgement take milliseconds), below a client's
/// patience. Past it the events are refused for a retry.
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a gather waits for the other nodes' shares.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(2);
/// Routed requests one node answers at once, over all the partitions it hosts; more
/// wait in their subscriptions (each a bounded channel).
const ANSWERING_MAX: usize = 512;
/// The queue group of a partition's subscriptions.
const OWNERS: &str = "owners";
/// Room kept in a request for its envelope beside the events.
const ENVELOPE_BYTES: usize = 1024;

/// The cluster's routing subjects.
#[derive(Debug, Clone)]
pub struct Subjects {
    /// `hunt.<c>.rpc`.
    rpc: String,
}

impl Subjects {
    /// The subjects of the cluster named `cluster` (as `hunt serve --cluster-name`).
    pub fn of(cluster: &str) -> Subjects {
        Subjects {
            rpc: format!("hunt.{cluster}.rpc"),
        }
    }

    /// Where partition `n`'s work goes.
    pub fn partition(&self, n: u32) -> String {
        format!("{}.p{n}", self.rpc)
    }

    pub fn giveback(&self) -> String {
        format!("{}.giveback", self.rpc)
    }

    pub fn gather(&self) -> String {
        format!("{}.gather", self.rpc)
    }
}

/// Work for one partition.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Request {
    /// Events with their indexes in the HTTP request they came in.
    Events { events: Vec<(usize, Event)> },
    /// A customer, as their owner shows them.
    User { user: String },
}

/// The owner's answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Reply {
    Statuses {
        statuses: Vec<(usize, String, Routed)>,
    },
    User {
        view: Option<UserView>,
    },
    /// Nothing of the request was done: why.
    Refused {
        why: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct GiveBack {
    /// The node whose partition found the account empty (it asked its own already).
    from: String,
    key: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct GatherAsk {
    /// The asking node, which counts its own share itself.
    from: String,
    ask: Ask,
}

#[derive(Debug, Serialize, Deserialize)]
struct GatherReply {
    node: String,
    share: Share,
}

/// Sends this node's work for other nodes' partitions over NATS.
pub struct NatsRouter {
    client: Client,
    subjects: Subjects,
    /// This node's id: its own answers to a gather are left out (it counts its share
    /// itself), and other nodes leave out its give-backs.
    node: String,
    /// The live nodes (ids), whose shares a gather waits for; kept by the caller (the
    /// members bucket, on a cluster).
    live: watch::Receiver<BTreeSet<String>>,
    route_timeout: Duration,
    gather_timeout: Duration,
}

impl NatsRouter {
    pub fn new(
        client: Client,
        subjects: Subjects,
        node: impl Into<String>,
        live: watch::Receiver<BTreeSet<String>>,
    ) -> NatsRouter {
        NatsRouter {
            client,
            subjects,
            node: node.into(),
            live,
            route_timeout: ROUTE_TIMEOUT,
            gather_timeout: GATHER_TIMEOUT,
        }
    }

    /// Other waits than [`ROUTE_TIMEOUT`] and [`GATHER_TIMEOUT`] (tests).
    pub fn with_timeouts(mut self, route: Duration, gather: Duration) -> NatsRouter {
        self.route_timeout = route;
        self.gather_timeout = gather;
        self
    }

    /// Sends `request` to partition `partition`'s owner and reads its reply.
    async fn ask(&self, partition: u32, request: &Request) -> Result<Reply, String> {
        let payload = serde_json::to_vec(request).map_err(|e| e.to_string())?;
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(self.route_timeout));
        let answer = self
            .client
            .send_request(self.subjects.partition(partition), request)
            .await
            .map_err(|e| match e.kind() {
                RequestErrorKind::NoResponders => {
                    format!("no node serves partition {partition} now")
                }
                RequestErrorKind::TimedOut => format!(
                    "partition {partition}'s owner did not answer within {:?}",
                    self.route_timeout
                ),
                _ => format!("asking partition {partition}'s owner over NATS: {e}"),
            })?;
        serde_json::from_slice(&answer.payload).map_err(|e| {
            format!("partition {partition}'s owner answered something unreadable: {e}")
        })
    }

    /// One request's worth of events: their statuses, each answered for exactly the
    /// events sent.
    async fn events_once(
        &self,
        partition: u32,
        events: Vec<(usize, Event)>,
    ) -> Result<Statuses, String> {
        let sent: BTreeSet<usize> = events.iter().map(|(i, _)| *i).collect();
        let statuses = match self.ask(partition, &Request::Events { events }).await? {
            Reply::Statuses { statuses } => statuses,
            Reply::Refused { why } => return Err(format!("partition {partition}'s owner: {why}")),
            Reply::User { .. } => {
                return Err(format!(
                    "partition {partition}'s owner answered events with a customer"
                ));
            }
        };
        let answered: BTreeSet<usize> = statuses.iter().map(|(i, _, _)| *i).collect();
        if answered != sent || statuses.len() != sent.len() {
            return Err(format!(
                "partition {partition}'s owner answered other events than those sent"
            ));
        }
        Ok(statuses
            .into_iter()
            .map(|(i, id, s)| (i, id, s.into_status()))
            .collect())
    }
}

/// `events` in order, cut where a request would be over `max_bytes`.
fn requests(events: Vec<(usize, Event)>, max_bytes: usize) -> Vec<Vec<(usize, Event)>> {
    let room = max_bytes.saturating_sub(ENVELOPE_BYTES).max(1);
    let mut out: Vec<Vec<(usize, Event)>> = Vec::new();
    let mut bytes = 0;
    for (i, e) in events {
        // An event too large to be sent goes alone, and is refused for what it is.
        let size = serde_json::to_vec(&e).map_or(room, |v| v.len() + 24);
        if out.is_empty() || bytes + size > room {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        out.last_mut().expect("pushed above").push((i, e));
    }
    out
}

impl Router for NatsRouter {
    fn events<'a>(
        &'a self,
        partition: u32,
        events: Vec<(usize, Event)>,
    ) -> BoxFuture<'a, Result<Statuses, String>> {
        Box::pin(async move {
            let max = self.client.server_info().max_payload;
            let mut parts = requests(events, max).into_iter();
            // Usually one request: its failure is the whole answer's.
            let first = parts.next().unwrap_or_default();
            let mut statuses = self.events_once(partition, first).await?;
            // The rest in order after it: a part that fails is refused on its own.
            for part in parts {
                let ids: Vec<(usize, String)> =
                    part.iter().map(|(i, e)| (*i, e.id.clone())).collect();
                match self.events_once(partition, part).await {
                    Ok(s) => statuses.extend(s),
                    Err(why) => statuses.extend(
                        ids.into_iter()
                            .map(|(i, id)| (i, id, Status::Moving(why.clone()))),
                    ),
                }
            }
            Ok(statuses)
        })
    }

    fn give_back(&self, key: &str) {
        let message = GiveBack {
            from: self.node.clone(),
            key: key.to_string(),
        };
        let Ok(payload) = serde_json::to_vec(&message) else {
            return;
        };
        let (client, subject) = (self.client.clone(), self.subjects.giveback());
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key, "a give-back was not sent: no runtime");
            return;
        };
        rt.spawn(async move {
            if let Err(e) = client.publish(subject, payload.into()).await {
                tracing::warn!(error = %e, "a give-back was not sent to the other nodes");
            }
        });
    }

    fn user<'a>(
        &'a self,
        partition: u32,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserView>, String>> {
        Box::pin(async move {
            let request = Request::User {
                user: user.to_string(),
            };
            match self.ask(partition, &request).await? {
                Reply::User { view } if view.as_ref().is_none_or(|v| v.user == user) => Ok(view),
                Reply::Refused { why } => Err(format!("partition {partition}'s owner: {why}")),
                _ => Err(format!(
                    "partition {partition}'s owner answered something else than customer {user:?}"
                )),
            }
        })
    }

    fn gather<'a>(&'a self, ask: &'a Ask) -> BoxFuture<'a, Gathered> {
        Box::pin(async move {
            let expected: BTreeSet<String> = self
                .live
                .borrow()
                .iter()
                .filter(|n| **n != self.node)
                .cloned()
                .collect();
            let mut gathered = Gathered::default();
            if expected.is_empty() {
                return gathered;
            }
            let mut answered = BTreeSet::new();
            match self.scatter(ask).await {
                Ok(mut inbox) => {
                    let until = tokio::time::Instant::now() + self.gather_timeout;
                    while !expected.is_subset(&answered) {
                        let Ok(Some(m)) = tokio::time::timeout_at(until, inbox.next()).await else {
                            break;
                        };
                        // A status (no responders) or a stranger's message is no share.
                        let Ok(reply) = serde_json::from_slice::<GatherReply>(&m.payload) else {
                            continue;
                        };
                        if reply.node != self.node && answered.insert(reply.node.clone()) {
                            gathered.shares.push(hunt_server::route::Share {
                                node: reply.node.clone(),
                                ..reply.share
                            });
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "the figures could not be gathered"),
            }
            gathered.missing = expected.difference(&answered).cloned().collect();
            gathered
        })
    }
}

impl NatsRouter {
    /// Publishes a gather, and gives the inbox its answers come to.
    async fn scatter(&self, ask: &Ask) -> Result<Subscriber, String> {
        let message = GatherAsk {
            from: self.node.clone(),
            ask: ask.clone(),
        };
        let payload = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
        let inbox = self.client.new_inbox();
        let answers = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| e.to_string())?;
        self.client
            .publish_with_reply(self.subjects.gather(), inbox, payload.into())
            .await
            .map_err(|e| e.to_string())?;
        Ok(answers)
    }
}

/// What a responder's tasks share.
struct Shared {
    client: Client,
    subjects: Subjects,
    node: String,
    /// Weakly: the responder does not keep a stopped service alive.
    service: Weak<Service>,
    /// Bounds the requests answered at once.
    answering: Arc<Semaphore>,
}

/// A partition this node hosts: its subscription's task.
struct Hosting {
    /// Ends the subscription; the task then answers what it has taken and ends.
    release: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Serves the partitions this node hosts, the other nodes' give-backs and their
/// gathers, with the local service.
pub struct Responder {
    shared: Arc<Shared>,
    hosted: Mutex<BTreeMap<u32, Hosting>>,
    /// The give-back and gather listeners, for as long as the responder lives.
    listeners: Vec<JoinHandle<()>>,
}

impl Responder {
    /// Starts answering give-backs and gathers for `service` (hosting no partition
    /// yet: see [`Responder::host`]).
    pub async fn start(
        client: Client,
        subjects: Subjects,
        node: impl Into<String>,
        service: &Arc<Service>,
    ) -> Result<Responder, String> {
        let shared = Arc::new(Shared {
            client: client.clone(),
            subjects: subjects.clone(),
            node: node.into(),
            service: Arc::downgrade(service),
            answering: Arc::new(Semaphore::new(ANSWERING_MAX)),
        });
        let nats = |e: async_nats::SubscribeError| format!("subscribing on NATS: {e}");
        let give_backs = client.subscribe(subjects.giveback()).await.map_err(nats)?;
        let gathers = client.subscribe(subjects.gather()).await.map_err(nats)?;
        subscribed(&client)
            .await
            .map_err(|e| format!("subscribing on NATS: {e}"))?;
        let listeners = vec![
            tokio::spawn(serve_give_backs(shared.clone(), give_backs)),
            tokio::spawn(serve_gathers(shared.clone(), gathers)),
        ];
        Ok(Responder {
            shared,
            hosted: Mutex::new(BTreeMap::new()),
            listeners,
        })
    }

    /// Answers partition `n`'s work from now on: done once the NATS server this node
    /// is connected to has the subscription (the cluster's other servers learn of it
    /// a moment later; meanwhile a request through them may be refused for a retry).
    /// The service must apply `n`.
    pub async fn host(&self, n: u32) -> Result<(), String> {
        let Some(service) = self.shared.service.upgrade() else {
            return Err("the service has stopped".into());
        };
        if !service.owns(n as usize) || n as usize >= service.config.partitions {
            return Err(format!("partition {n} is not applied by this node"));
        }
        let mut hosted = self.hosted.lock().await;
        if hosted.contains_key(&n) {
            return Ok(());
        }
        let client = &self.shared.client;
        // In a queue group: while two subscriptions overlap (this node's during a
        // release and a new one, or two nodes' during a hand-off), each request is
        // taken by one of them only, and answered once.
        let work = client
            .queue_subscribe(self.shared.subjects.partition(n), OWNERS.into())
            .await
            .map_err(|e| format!("subscribing to partition {n}'s work: {e}"))?;
        subscribed(client)
            .await
            .map_err(|e| format!("subscribing to partition {n}'s work: {e}"))?;
        let (release, released) = oneshot::channel();
        let task = tokio::spawn(serve_partition(self.shared.clone(), n, work, released));
        hosted.insert(n, Hosting { release, task });
        Ok(())
    }

    /// Stops taking partition `n`'s work: the subscription ends, and the requests the
    /// NATS server delivered before are answered before this returns. Requests sent
    /// after find no responder (refused for a retry).
    pub async fn release(&self, n: u32) {
        let Some(h) = self.hosted.lock().await.remove(&n) else {
            return;
        };
        let _ = h.release.send(());
        if let Err(e) = h.task.await
            && e.is_panic()
        {
            tracing::error!(partition = n, "the responder of a partition panicked");
        }
    }

    /// The partitions hosted now.
    pub async fn hosted(&self) -> Vec<u32> {
        self.hosted.lock().await.keys().copied().collect()
    }

    /// Releases every partition, then stops answering give-backs and gathers.
    pub async fn stop(&self) {
        for n in self.hosted().await {
            self.release(n).await;
        }
        for l in &self.listeners {
            l.abort();
        }
    }
}

/// Returns once the server has taken every subscription `client` asked for so far: it
/// handles a connection's messages in order, so a message this connection sends to
/// itself comes back after them. (`Client::flush` only empties the socket's buffer.)
async fn subscribed(client: &Client) -> Result<(), String> {
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish(inbox, Default::default())
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(ROUTE_TIMEOUT, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        _ => Err(format!(
            "the NATS server did not confirm within {ROUTE_TIMEOUT:?}"
        )),
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        for l in &self.listeners {
            l.abort();
        }
        for h in self.hosted.get_mut().values() {
            h.task.abort();
        }
    }
}

/// Takes partition `n`'s requests, each answered in a task of its own, until
/// released; then drains the subscription and answers what was taken.
async fn serve_partition(
    shared: Arc<Shared>,
    n: u32,
    mut work: Subscriber,
    mut released: oneshot::Receiver<()>,
) {
    let mut answering = JoinSet::new();
    let mut draining = None;
    loop {
        let until = draining.unwrap_or_else(|| tokio::time::Instant::now() + ROUTE_TIMEOUT);
        tokio::select! {
            _ = &mut released, if draining.is_none() => {
                // Requests the server delivered before it took the unsubscription
                // still come, then the stream ends; a link gone meanwhile ends the
                // wait after a request's own timeout, when nobody waits any more.
                if let Err(e) = work.drain().await {
                    tracing::warn!(partition = n, error = %e, "the subscription could not be drained");
                    break;
                }
                draining = Some(tokio::time::Instant::now() + ROUTE_TIMEOUT);
            }
            () = tokio::time::sleep_until(until), if draining.is_some() => break,
            m = work.next() => {
                let Some(m) = m else { break };
                let Ok(permit) = shared.answering.clone().acquire_owned().await else {
                    break;
                };
                let shared = shared.clone();
                answering.spawn(async move {
                    answer(&shared, n, m).await;
                    drop(permit);
                });
            }
            Some(_) = answering.join_next(), if !answering.is_empty() => {}
        }
    }
    while answering.join_next().await.is_some() {}
}

/// Answers one request for partition `n`.
async fn answer(shared: &Shared, n: u32, m: Message) {
    let Some(to) = m.reply else {
        tracing::debug!(partition = n, "a request without a reply subject: ignored");
        return;
    };
    let reply = match shared.service.upgrade() {
        Some(service) => respond(&service, n, &m.payload).await,
        None => Reply::Refused {
            why: "the node is stopping".into(),
        },
    };
    let max = shared.client.server_info().max_payload;
    let payload = match serde_json::to_vec(&reply) {
        Ok(p) if p.len() <= max => p,
        Ok(p) => {
            // Taken and durable here, but the answer does not fit: the asking node
            // refuses the events for a retry, whose duplicates' answers are as large.
            let why = format!(
                "the answer ({} bytes) is over the NATS servers' max_payload ({max} bytes); raise it",
                p.len()
            );
            tracing::error!(partition = n, "{why}");
            serde_json::to_vec(&Reply::Refused { why }).unwrap_or_default()
        }
        Err(e) => {
            tracing::error!(partition = n, error = %e, "a reply could not be written");
            return;
        }
    };
    if let Err(e) = shared.client.publish(to, payload.into()).await {
        // The asking node refuses the events for a retry once its wait is over.
        tracing::warn!(partition = n, error = %e, "a reply was not sent");
    }
}

/// What this node answers to a request for partition `n`.
async fn respond(service: &Service, n: u32, payload: &[u8]) -> Reply {
    let request = match serde_json::from_slice::<Request>(payload) {
        Ok(r) => r,
        Err(e) => {
            return Reply::Refused {
                why: format!("the request could not be read: {e}"),
            };
        }
    };
    let parts = service.config.partitions;
    let of_n = |user: &str| hunt_server::state::partition_of(user, parts) == n as usize;
    match request {
        Request::Events { events } => {
            if let Some((i, why)) = events
                .iter()
                .find_map(|(i, e)| e.validate().err().map(|why| (i, why)))
            {
                return Reply::Refused {
                    why: format!("event {i} is not valid: {why}"),
                };
            }
            // An event of another partition came on the wrong subject: refused alone.
            let (events, stray): (Vec<_>, Vec<_>) =
                events.into_iter().partition(|(_, e)| of_n(&e.user));
            let mut statuses: Vec<(usize, String, Routed)> = stray
                .into_iter()
                .map(|(i, e)| {
                    let why = format!("sent as partition {n}'s, but it is not");
                    (i, e.id, Routed::Moving { why })
                })
                .collect();
            match service.ingest_routed(events).await {
                Ok(done) => {
                    statuses.extend(
                        done.iter()
                            .map(|(i, id, s)| (*i, id.clone(), Routed::of(s))),
                    );
                    Reply::Statuses { statuses }
                }
                Err(e) => Reply::Refused { why: e.to_string() },
            }
        }
        Request::User { user } if !of_n(&user) => Reply::Refused {
            why: format!("customer {user:?} is not of partition {n}"),
        },
        Request::User { user } => match service.user_routed(&user).await {
            Ok(view) => Reply::User { view },
            Err(e) => Reply::Refused { why: e.to_string() },
        },
    }
}

/// Asks this node's partitions to give back what another node's partition needs.
async fn serve_give_backs(shared: Arc<Shared>, mut asks: Subscriber) {
    while let Some(m) = asks.next().await {
        let Ok(ask) = serde_json::from_slice::<GiveBack>(&m.payload) else {
            tracing::debug!("an unreadable give-back: ignored");
            continue;
        };
        if ask.from == shared.node {
            continue;
        }
        match shared.service.upgrade() {
            Some(s) => s.give_back(&ask.key),
            None => return,
        }
    }
}

/// Answers other nodes' gathers with this node's share.
async fn serve_gathers(shared: Arc<Shared>, mut asks: Subscriber) {
    while let Some(m) = asks.next().await {
        let (Some(to), Ok(ask)) = (m.reply, serde_json::from_slice::<GatherAsk>(&m.payload)) else {
            tracing::debug!("an unreadable gather: ignored");
            continue;
        };
        if ask.from == shared.node {
            continue;
        }
        let Some(service) = shared.service.upgrade() else {
            return;
        };
        // Each answered on its own: one waiting behind busy partitions holds up no
        // other node's gather.
        tokio::spawn(answer_gather(shared.clone(), service, ask.ask, to));
    }
}

/// Answers one gather with this node's share.
async fn answer_gather(
    shared: Arc<Shared>,
    service: Arc<hunt_server::service::Service>,
    ask: hunt_server::route::Ask,
    to: async_nats::Subject,
) {
    let reply = GatherReply {
        node: shared.node.clone(),
        share: service.share(&ask).await,
    };
    drop(service);
    let max = shared.client.server_info().max_payload;
    match serde_json::to_vec(&reply) {
        // The asking node names this one as missing.
        Ok(p) if p.len() > max => tracing::error!(
            bytes = p.len(),
            max_payload = max,
            "a share of the figures is over the NATS servers' max_payload (a long winners list?): not sent"
        ),
        Ok(p) => {
            if let Err(e) = shared.client.publish(to, p.into()).await {
                tracing::warn!(error = %e, "a share of the figures was not sent");
            }
        }
        Err(e) => tracing::error!(error = %e, "a share of the figures could not be written"),
    }
}

#[cfg(test)]
pub(crate) mod tests;
