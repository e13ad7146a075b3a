// The dashboard: one page per hash route (#/overview, #/hunts, …), each reading the
// server's JSON API with the key the operator gave (kept in sessionStorage, sent as
// `Authorization: Bearer`). Live pages read again every few seconds. The DOM is built
// with createElement and textContent only: no HTML strings, no inline style or script.

import { sparkline, timeChart, barsOverTime, funnel } from "./charts.js";

const KEY = "hunt.apiKey";
const REFRESH_MS = 5000;
const main = document.getElementById("main");
const banner = document.getElementById("banner");
const updated = document.getElementById("updated");

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  append(e, children);
  return e;
}

function append(e, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function code(s) {
  return h("code", {}, s);
}

function empty(...children) {
  return h("p", { class: "empty" }, ...children);
}

function table(headers, rows, attrs) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      attrs || {},
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows),
    ),
  );
}

// A figure for people and, in `data-value`, for programs (the browser tests).
function figure(name, value, shown) {
  return h("span", { "data-figure": name, "data-value": value === null || value === undefined ? "" : value }, shown ?? fmt(value));
}

// ---------------------------------------------------------------- formatting

function fmt(n) {
  if (n === null || n === undefined) return "—";
  if (typeof n !== "number") return String(n);
  return n.toLocaleString("en-US", { maximumFractionDigits: n < 10 ? 2 : n < 100 ? 1 : 0 });
}

function ms(v) {
  return v === null || v === undefined ? "—" : `${fmt(v)} ms`;
}

function dur(s) {
  if (s === null || s === undefined) return "—";
  if (s > 0 && s < 1) return "under 1 s";
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} h ${m % 60} min`;
  return `${Math.floor(hrs / 24)} d ${hrs % 24} h`;
}

function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? ts : d.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "medium" });
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

async function api(path, opts = {}) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (opts.type) headers["Content-Type"] = opts.type;
  let r;
  try {
    r = await fetch(path, { method: opts.method || "GET", headers, body: opts.body, cache: "no-store", credentials: "omit" });
  } catch (e) {
    throw new ApiError(0, "unreachable", `The server did not answer (${e.message}).`);
  }
  let data = null;
  try {
    data = await r.json();
  } catch (_) {
    data = null;
  }
  if (!r.ok) {
    const err = (data && data.error) || {};
    const e = new ApiError(r.status, err.code || String(r.status), err.message || r.statusText, err.details);
    if (r.status === 401) needKey(e.message);
    throw e;
  }
  if (banner.getAttribute("data-kind") === "key") {
    // A key was needed and one now works.
    banner.hidden = true;
    banner.removeAttribute("data-kind");
    banner.replaceChildren();
  }
  return data;
}

function errorBox(e) {
  const box = h("div", { class: "error-box", role: "alert", "data-error": e.code || "" });
  if (e.status === 403) {
    append(box, [h("strong", {}, "Not allowed with this key. "), e.message, " — this needs a key with the admin role."]);
  } else if (e.status === 401) {
    append(box, [h("strong", {}, "An API key is needed. "), e.message, " Enter a key with the read role (admin for actions) above."]);
  } else {
    append(box, [h("strong", {}, e.status ? `Error ${e.status}: ` : "Error: "), e.message]);
  }
  return box;
}

// ---------------------------------------------------------------- key and mode

const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");

keyForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const k = keyInput.value.trim();
  if (k) sessionStorage.setItem(KEY, k);
  keyInput.value = "";
  showKeyState();
  route();
});

document.getElementById("key-forget").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  showKeyState();
  route();
});

function showKeyState() {
  keyInput.placeholder = sessionStorage.getItem(KEY) ? "a key is set (this tab only)" : "read or admin key";
}

function needKey(message) {
  banner.hidden = false;
  banner.className = "banner error";
  banner.removeAttribute("data-mode");
  banner.setAttribute("data-kind", "key");
  banner.replaceChildren(h("strong", {}, "An API key is needed: "), message, ". Enter one in the API key field.");
}

function setMode(development) {
  if (development) {
    banner.hidden = false;
    banner.className = "banner";
    banner.removeAttribute("data-kind");
    banner.setAttribute("data-mode", "development");
    banner.replaceChildren(
      h("strong", {}, "Development mode: "),
      "this server has no API keys and listens on loopback only, so every endpoint, admin included, is open to anyone on this machine. Give it keys (",
      code("--keys FILE"),
      ") before it faces a network.",
    );
  } else if (banner.getAttribute("data-mode") === "development") {
    banner.hidden = true;
    banner.removeAttribute("data-mode");
    banner.replaceChildren();
  }
}

// ---------------------------------------------------------------- live pages

// Runs `f` now and every REFRESH_MS until the page is left; never two at once.
function live(f) {
  let busy = false;
  let stopped = false;
  const tick = async () => {
    if (busy || stopped) return;
    busy = true;
    try {
      await f();
      updated.textContent = `Updated ${new Date().toLocaleTimeString("en-GB")} · refreshes every ${REFRESH_MS / 1000} s`;
    } finally {
      busy = false;
    }
  };
  tick();
  const id = setInterval(tick, REFRESH_MS);
  return () => {
    stopped = true;
    clearInterval(id);
  };
}

// Shows what `load` renders in `region`, or the error it met.
async function fill(region, load) {
  try {
    region.replaceChildren(...[await load()].flat());
  } catch (e) {
    region.replaceChildren(errorBox(e));
  }
}

// Countdowns tick every second between two readings of the page.
setInterval(() => {
  for (const e of document.querySelectorAll("[data-deadline]")) {
    const left = (Number(e.getAttribute("data-deadline")) - Date.now()) / 1000;
    e.textContent = left > 0 ? dur(left) : "now";
  }
}, 1000);

function countdown(targetIso, serverIso) {
  // The server's clock, not this machine's: the offset between the two is taken out.
  const offset = Date.now() - Date.parse(serverIso);
  const deadline = Date.parse(targetIso) + offset;
  return h("span", { "data-deadline": deadline }, dur((deadline - Date.now()) / 1000));
}

// ---------------------------------------------------------------- Overview

function card(label, value, ...more) {
  return h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "figure" }, value), ...more);
}

function overviewPage(root) {
  root.append(h("h1", {}, "Overview"));
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  root.append(body);
  return live(() =>
    fill(body, async () => {
      const o = await api("/v1/overview");
      setMode(o.development);
      const hist = o.history;
      const firing = o.alerts_firing;
      return [
        h(
          "div",
          { class: "cards" },
          card(
            "Events accepted per second",
            figure("events_per_s", o.now.events_per_s),
            sparkline(hist.map((p) => p.events_per_s), "Events per second over the last 15 minutes"),
          ),
          card(
            "Acknowledgement p50 / p99",
            [figure("ack_p50_ms", o.now.ack_p50_ms, ms(o.now.ack_p50_ms)), " / ", figure("ack_p99_ms", o.now.ack_p99_ms, ms(o.now.ack_p99_ms))],
            sparkline(hist.map((p) => p.ack_p99_ms), "Acknowledgement p99 over the last 15 minutes"),
          ),
          card(
            "Backlog",
            [figure("backlog", o.now.backlog), h("small", {}, " events")],
            h("div", { class: "label" }, "time to drain: ", figure("time_to_drain_s", o.now.time_to_drain_s, o.now.backlog === 0 ? "nothing queued" : o.now.time_to_drain_s === null ? "not draining" : dur(o.now.time_to_drain_s))),
            sparkline(hist.map((p) => p.backlog), "Backlog over the last 15 minutes"),
          ),
          card("Hunts file version in force", figure("version", o.version), h("div", { class: "label" }, o.clustered ? "on a cluster" : "single node")),
        ),
        h(
          "section",
          { class: "panel", "aria-labelledby": "h-alerts" },
          h("h2", { id: "h-alerts" }, "Alerts firing: ", figure("alerts_firing", firing.length)),
          firing.length === 0
            ? h("p", { class: "muted" }, "No alert is firing. The rules and every alert's state: ", h("a", { href: "/v1/alerts" }, "/v1/alerts"), ".")
            : table(
                ["Alert", "Subject", "Since", "Value", "Condition"],
                firing.map((a) => h("tr", { "data-alert": a.alert }, h("td", { class: "state-firing" }, a.alert), h("td", {}, a.subject || "—"), h("td", {}, when(a.since)), h("td", { class: "num" }, fmt(a.value)), h("td", {}, a.description))),
              ),
        ),
        h(
          "section",
          { class: "panel", "aria-labelledby": "h-sinks" },
          h("h2", { id: "h-sinks" }, "Sinks"),
          o.sinks.length === 0
            ? empty("No sinks in the hunts file in force — add ", code("sinks:"), " and a hunt's ", code("notify:"), " to send outcomes to other systems.")
            : table(
                ["Sink", "Breaker", "Queue", "In flight", "Dead letters", "Delivered", "Failed attempts"],
                o.sinks.map((s) =>
                  h(
                    "tr",
                    { "data-sink": s.sink },
                    h("th", { scope: "row" }, s.sink),
                    h("td", { class: `state-${s.breaker}` }, figure("breaker", s.breaker, s.breaker.replace("_", "-") + (s.unhealthy_for_s ? ` for ${dur(s.unhealthy_for_s)}` : ""))),
                    h("td", { class: "num" }, figure("queue", s.queue)),
                    h("td", { class: "num" }, figure("in_flight", s.in_flight)),
                    h("td", { class: "num" }, figure("dead_letters", s.dead_letters)),
                    h("td", { class: "num" }, figure("delivered", s.delivered)),
                    h("td", { class: "num" }, figure("failed", s.failed)),
                  ),
                ),
              ),
        ),
        h(
          "section",
          { class: "panel", "aria-labelledby": "h-partitions" },
          h("h2", { id: "h-partitions" }, "Partitions"),
          table(
            ["Partition", "Backlog (events)", "Applied per second", "Time to drain"],
            o.partitions.map((p) =>
              h("tr", { "data-partition": p.partition }, h("th", { scope: "row" }, String(p.partition)), h("td", { class: "num" }, figure("backlog", p.backlog)), h("td", { class: "num" }, figure("applied_per_s", p.applied_per_s)), h("td", { class: "num" }, p.backlog === 0 ? "—" : dur(p.time_to_drain_s))),
            ),
          ),
          h("p", { class: "muted" }, `Rates are over the last ${o.sample_every_s} seconds or so; the sparklines show the last 15 minutes, a point every ${o.sample_every_s} s.`),
        ),
      ];
    }),
  );
}

// ---------------------------------------------------------------- Hunts

function windowLine(hunt, hist) {
  const now = hist.server_time;
  if (!hunt.from && !hunt.until) return ["Always on."];
  if (hunt.from && Date.parse(hunt.from) > Date.parse(now)) return ["Starts ", when(hunt.from), " — in ", countdown(hunt.from, now), "."];
  if (hunt.until && Date.parse(hunt.until) <= Date.parse(now)) return ["Ended ", when(hunt.until), "."];
  const parts = [hunt.from ? ["Open since ", when(hunt.from)] : "Open"];
  if (hunt.until) parts.push("; ends ", when(hunt.until), " — in ", countdown(hunt.until, now), ".");
  else parts.push(", with no end.");
  return parts;
}

function huntSection(hunt, stats, hist) {
  const rows = [{ label: "participants", value: stats.participants }];
  for (const s of stats.funnel) rows.push({ label: `step ${s.step}`, value: s.found });
  rows.push({ label: "completed", value: stats.completions, cls: "done" });
  if (hunt.reward) rows.push({ label: "rewarded", value: stats.rewards_granted, cls: "won" });
  const pts = hist.points;
  const completions = pts.slice(1).map((p, i) => [Date.parse(p.at), Math.max(0, p.completions - pts[i].completions)]);
  const denied = Object.entries(stats.rewards_denied);
  return h(
    "section",
    { class: "panel", "data-hunt": hunt.id, "aria-labelledby": `h-hunt-${hunt.id}` },
    h("h2", { id: `h-hunt-${hunt.id}` }, hunt.title ? `${hunt.title} ` : "", h("span", { class: "muted" }, `(${hunt.id})`)),
    h("p", {}, h("span", { class: hunt.active_now ? "state-ok" : "state-pending" }, hunt.active_now ? "Active. " : "Not active now. "), windowLine(hunt, hist)),
    h(
      "div",
      { class: "grid2" },
      h(
        "div",
        {},
        h("h3", {}, "Funnel"),
        funnel(`Funnel of ${hunt.id}: ${rows.map((r) => `${r.label} ${r.value}`).join(", ")}`, rows),
        table(
          ["Stage", "Customers"],
          [
            h("tr", {}, h("td", {}, "Participants"), h("td", { class: "num" }, figure("participants", stats.participants))),
            ...stats.funnel.map((s) => h("tr", {}, h("td", {}, "Step ", code(s.step)), h("td", { class: "num" }, figure(`step:${s.step}`, s.found)))),
            h("tr", {}, h("td", {}, "Completed"), h("td", { class: "num" }, figure("completions", stats.completions))),
            h("tr", {}, h("td", {}, "Rewarded"), h("td", { class: "num" }, figure("rewards_granted", stats.rewards_granted))),
            h("tr", {}, h("td", {}, "Trails gone cold"), h("td", { class: "num" }, figure("trails_gone_cold", stats.trails_gone_cold))),
          ],
        ),
      ),
      h(
        "div",
        {},
        h("h3", {}, "Completions over time"),
        barsOverTime(`Completions of ${hunt.id} every ${hist.sample_every_s} seconds over the last 15 minutes`, completions),
        h("h3", {}, "Time to complete"),
        hist.time_to_complete.completions === 0
          ? h("p", { class: "muted" }, "No completion measured yet: from a customer's first find to their completion, since the server started.")
          : h(
              "p",
              {},
              "Median ",
              figure("ttc_median_s", hist.time_to_complete.median_s, dur(hist.time_to_complete.median_s)),
              ", 90th percentile ",
              figure("ttc_p90_s", hist.time_to_complete.p90_s, dur(hist.time_to_complete.p90_s)),
              h("span", { class: "muted" }, " — over the last ", figure("ttc_completions", hist.time_to_complete.completions), " completions measured (from the first find, by event time)."),
            ),
        h("h3", {}, "Denials by reason"),
        denied.length === 0
          ? h("p", { class: "muted" }, "No reward denied.")
          : table(["Reason", "Denials"], denied.map(([r, n]) => h("tr", {}, h("td", {}, r.replaceAll("_", " ")), h("td", { class: "num" }, figure(`denied:${r}`, n))))),
        stats.reward
          ? h("p", {}, "Pool ", code(stats.reward.pool), ": ", figure("pool_remaining", stats.reward.remaining), ` of ${fmt(stats.reward.size)} codes left.`)
          : hunt.reward
            ? null
            : h("p", { class: "muted" }, "No reward."),
      ),
    ),
  );
}

function huntsPage(root) {
  root.append(h("h1", {}, "Hunts"));
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  root.append(body);
  return live(() =>
    fill(body, async () => {
      const list = await api("/v1/hunts");
      if (list.hunts.length === 0) {
        return empty("No hunts yet — PUT a hunts file (", code("PUT /v1/config"), ", or the Versions page) or start the server with ", code("--config FILE"), ".");
      }
      const sections = await Promise.all(
        list.hunts.map(async (hunt) => {
          const [stats, hist] = await Promise.all([api(`/v1/hunts/${enc(hunt.id)}/stats`), api(`/v1/hunts/${enc(hunt.id)}/history`)]);
          return huntSection(hunt, stats, hist);
        }),
      );
      return [h("p", { class: "muted" }, `Hunts file version ${list.version}. Figures are read every ${REFRESH_MS / 1000} s; completions over time are counted every 5 s.`), ...sections];
    }),
  );
}

// ---------------------------------------------------------------- Pools

function poolSection(p) {
  const pts = p.burn_down.map((b) => [Date.parse(b.at), b.remaining]);
  const tNow = pts[pts.length - 1][0];
  const span = Math.max(tNow - pts[0][0], 5 * 60 * 1000);
  const t1 = tNow + span;
  const f = p.forecast;
  const series = [{ points: pts }];
  if (f && f.grant_rate_per_min) {
    const perMs = f.grant_rate_per_min / 60000;
    const out = f.runs_out_at ? Date.parse(f.runs_out_at) : Infinity;
    const end = Math.min(out, t1);
    series.push({ points: [[tNow, p.remaining], [end, Math.max(0, p.remaining - perMs * (end - tNow))]], dashed: true });
  }
  let forecastText;
  if (!f) forecastText = ["No forecast: no ", code("pool_runs_out_within"), " alert rule applies to this pool."];
  else if (f.grant_rate_per_min === null) forecastText = [`No forecast yet: it needs ${dur(f.rule_window_s / 10)} of history with codes granted (the alert's window is ${dur(f.rule_window_s)}).`];
  else forecastText = ["Runs out ", when(f.runs_out_at), " — in ", figure("runs_out_in_s", f.runs_out_in_s, dur(f.runs_out_in_s)), ` at ${fmt(f.grant_rate_per_min)} codes a minute (the rate over the alert's ${dur(f.rule_window_s)} window).`];
  return h(
    "section",
    { class: "panel", "data-pool": p.pool, "aria-labelledby": `h-pool-${p.pool}` },
    h("h2", { id: `h-pool-${p.pool}` }, "Pool ", code(p.pool)),
    h(
      "div",
      { class: "cards" },
      card("Codes left", [figure("remaining", p.remaining), h("small", {}, ` of ${fmt(p.size)}`)]),
      card("Granted", figure("granted", p.size - p.remaining)),
      card("Grant rate", [figure("grant_rate_per_min", f ? f.grant_rate_per_min : null), h("small", {}, " a minute")]),
    ),
    h("p", {}, forecastText),
    timeChart(`Codes left in ${p.pool} over the last 15 minutes, with the forecast dashed`, series, { t1, yMax: p.size }),
    h("p", { class: "muted" }, p.hunts.length ? ["Rewards ", p.hunts.map((x, i) => [i ? ", " : "", code(x)]), "."] : "No hunt of the version in force rewards from it."),
  );
}

function poolsPage(root) {
  root.append(h("h1", {}, "Pools"));
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  root.append(body);
  return live(() =>
    fill(body, async () => {
      const a = await api("/v1/pools");
      if (a.pools.length === 0) return empty("No reward pools in the hunts file in force — add ", code("pools:"), " and a hunt's ", code("reward:"), " to give codes.");
      return a.pools.map(poolSection);
    }),
  );
}

// ---------------------------------------------------------------- Customer

function customerPage(root) {
  root.append(h("h1", {}, "Customer lookup"));
  const input = h("input", { id: "customer-id", name: "user", required: true, autocomplete: "off", spellcheck: "false" });
  const result = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "row", id: "customer-form" },
    h("div", { class: "field" }, h("label", { for: "customer-id" }, "Customer id"), input),
    h("button", { type: "submit", class: "primary" }, "Look up"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const user = input.value.trim();
    if (user) fill(result, () => customer(user));
  });
  root.append(form, result);
  input.focus();
}

async function customer(user) {
  let u;
  try {
    u = await api(`/v1/users/${enc(user)}`);
  } catch (e) {
    if (e.status === 404) return empty("No events were ever accepted for customer ", code(user), ".");
    throw e;
  }
  const visible = await api(`/v1/users/${enc(user)}/hunts`);
  const clue = new Map(visible.hunts.map((v) => [v.hunt, v]));
  const traits = Object.entries(u.traits || {});
  return h(
    "div",
    { "data-customer": u.user },
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "Progress of ", code(u.user)),
      u.hunts.length === 0
        ? h("p", { class: "muted" }, "No progress in any hunt yet.")
        : table(
            ["Hunt", "Steps found", "Completed", "Next clue"],
            u.hunts.map((p) => {
              const v = clue.get(p.hunt);
              return h(
                "tr",
                { "data-hunt": p.hunt },
                h("th", { scope: "row" }, p.hunt),
                h("td", {}, figure("found_count", p.found_count), v ? ` of ${v.steps}` : "", p.found.length ? [": ", p.found.join(", ")] : ""),
                h("td", {}, p.completed_at ? when(p.completed_at) : "not yet"),
                h("td", {}, v && v.next_clue ? v.next_clue : p.completed_at ? "—" : v ? "—" : "(the hunt is not active)"),
              );
            }),
          ),
    ),
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "Codes"),
      u.rewards.length === 0
        ? h("p", { class: "muted" }, "No code granted.")
        : table(["Hunt", "Pool", "Code", "Granted"], u.rewards.map((r) => h("tr", {}, h("td", {}, r.hunt), h("td", {}, r.pool), h("td", {}, figure("code", r.code)), h("td", {}, when(r.at))))),
    ),
    h(
      "section",
      { class: "panel" },
      h("h2", {}, "Traits"),
      traits.length === 0 ? h("p", { class: "muted" }, "No traits.") : table(["Trait", "Value"], traits.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, typeof v === "string" ? v : JSON.stringify(v))))),
    ),
  );
}

// ---------------------------------------------------------------- Dead letters

function dlqPage(root) {
  root.append(h("h1", {}, "Dead letters"));
  const field = (id, label, type) => h("div", { class: "field" }, h("label", { for: id }, label), h("input", { id, type: type || "text", autocomplete: "off" }));
  const form = h(
    "form",
    { class: "row", id: "dlq-filter" },
    field("dlq-sink", "Sink"),
    field("dlq-hunt", "Hunt"),
    field("dlq-since", "Dead since", "datetime-local"),
    field("dlq-until", "Dead before", "datetime-local"),
    h("button", { type: "submit", class: "primary" }, "Filter"),
  );
  const confirmArea = h("div", { "aria-live": "polite" });
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  root.append(h("p", { class: "muted" }, "Deliveries that gave up after their last retry. Listing, retrying and dropping need a key with the admin role."), form, confirmArea, list);

  const filter = () => {
    const f = {};
    const v = (id) => document.getElementById(id).value.trim();
    if (v("dlq-sink")) f.sink = v("dlq-sink");
    if (v("dlq-hunt")) f.hunt = v("dlq-hunt");
    if (v("dlq-since")) f.since = new Date(v("dlq-since")).toISOString();
    if (v("dlq-until")) f.until = new Date(v("dlq-until")).toISOString();
    return f;
  };

  const ask = (verb, selection, count, what) => {
    const yes = h("button", { type: "button", class: verb === "drop" ? "danger" : "primary", id: "confirm-yes" }, `Yes, ${verb} ${count}`);
    const no = h("button", { type: "button", id: "confirm-no" }, "Cancel");
    const box = h("div", { class: "confirm", role: "alertdialog", "aria-labelledby": "confirm-q" }, h("p", { id: "confirm-q" }, `${verb === "drop" ? "Drop" : "Retry"} ${count} dead letter${count === 1 ? "" : "s"} ${what}?`, verb === "drop" ? " They are removed for good." : " They are sent again with the same ids."), h("div", { class: "row" }, yes, no));
    no.addEventListener("click", () => confirmArea.replaceChildren());
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      try {
        const r = await api(`/v1/dlq/${verb}`, { method: "POST", type: "application/json", body: JSON.stringify(selection) });
        const n = verb === "retry" ? r.retried : r.dropped;
        confirmArea.replaceChildren(h("div", { class: "ok-box", role: "status", "data-done": verb }, `${verb === "retry" ? "Retried" : "Dropped"} ${n} dead letter${n === 1 ? "" : "s"}.`));
      } catch (e) {
        confirmArea.replaceChildren(errorBox(e));
      }
      load();
    });
    confirmArea.replaceChildren(box);
    yes.focus();
  };

  const history = async (id, cell) => {
    await fill(cell, async () => {
      const d = await api(`/v1/dlq/${enc(id)}`);
      return [
        h("h3", {}, "History of ", code(d.id)),
        h("ol", {}, d.history.map((a) => h("li", {}, when(a.at), ": ", a.error))),
        d.event ? h("details", {}, h("summary", {}, "The CloudEvent"), h("pre", {}, JSON.stringify(d.event, null, 2))) : null,
      ];
    });
  };

  const load = () =>
    fill(list, async () => {
      const f = filter();
      const q = new URLSearchParams({ ...f, limit: "500" });
      const a = await api(`/v1/dlq?${q}`);
      if (a.total === 0) return empty(Object.keys(f).length ? "No dead letter matches this filter." : "No dead letters — every delivery was made or is still being tried.");
      const what = Object.keys(f).length ? `matching ${Object.entries(f).map(([k, v]) => `${k} ${v}`).join(", ")}` : "in the queue";
      const rows = [];
      for (const e of a.entries) {
        const detail = h("td", { colspan: 7 });
        const detailRow = h("tr", { hidden: true }, detail);
        const show = h("button", { type: "button", "aria-expanded": "false", "aria-label": `History of ${e.id}` }, "History");
        show.addEventListener("click", () => {
          const open = detailRow.hidden;
          detailRow.hidden = !open;
          show.setAttribute("aria-expanded", String(open));
          if (open) history(e.id, detail);
        });
        rows.push(
          h(
            "tr",
            { "data-dead-letter": e.id },
            h("td", {}, code(e.id)),
            h("td", {}, e.sink),
            h("td", {}, e.hunt),
            h("td", {}, when(e.dead_at)),
            h("td", { class: "num" }, String(e.attempts)),
            h("td", {}, e.last_error || "—"),
            h(
              "td",
              {},
              h("div", { class: "row" }, show, h("button", { type: "button", "data-action": "retry", "aria-label": `Retry ${e.id}`, onclick: () => ask("retry", { id: e.id }, 1, e.id) }, "Retry"), h("button", { type: "button", class: "danger", "data-action": "drop", "aria-label": `Drop ${e.id}`, onclick: () => ask("drop", { id: e.id }, 1, e.id) }, "Drop")),
            ),
          ),
          detailRow,
        );
      }
      const selection = Object.keys(f).length ? f : { all: true };
      return [
        h(
          "div",
          { class: "row" },
          h("p", {}, figure("total", a.total), ` dead letter${a.total === 1 ? "" : "s"} ${what}`, a.total > a.entries.length ? ` (the first ${a.entries.length} shown)` : "", "."),
          h("button", { type: "button", id: "retry-all", onclick: () => ask("retry", selection, a.total, what) }, `Retry all ${a.total}`),
          h("button", { type: "button", class: "danger", id: "drop-all", onclick: () => ask("drop", selection, a.total, what) }, `Drop all ${a.total}`),
        ),
        table(["Id", "Sink", "Hunt", "Dead since", "Attempts", "Last error", "Actions"], rows),
      ];
    });

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    confirmArea.replaceChildren();
    load();
  });
  load();
}

// ---------------------------------------------------------------- Versions

function diagnostics(e) {
  const d = e.details;
  if (e.code === "invalid_hunts_file" && Array.isArray(d)) {
    return h(
      "ul",
      { class: "plain", id: "upload-diagnostics" },
      d.map((p) => h("li", { "data-line": p.line }, h("strong", {}, `${p.severity} at line ${p.line}, column ${p.column}: `), p.message, p.help ? [" — ", h("em", {}, p.help)] : "")),
    );
  }
  if (e.code === "tests_failed" && d && d.failures) {
    return d.failures.map((f) => [h("h3", {}, "Test case ", code(f.name), " failed"), h("pre", {}, f.diff.join("\n"))]);
  }
  if (d && d.summary) return planView(d);
  return null;
}

function planView(p) {
  return h(
    "div",
    { class: "plan" },
    p.summary.length === 0 ? h("p", {}, "No changes.") : h("ul", { class: "plain" }, p.summary.map((s) => h("li", {}, s))),
    p.refusals && p.refusals.length ? [h("h3", {}, "Refused"), h("ul", {}, p.refusals.map((r) => h("li", {}, r.reason)))] : null,
    p.customers !== null && p.customers !== undefined ? h("p", { class: "muted" }, `${fmt(p.customers)} customers looked at.`) : null,
  );
}

function versionsPage(root) {
  root.append(h("h1", {}, "Versions of the hunts file"));
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const shown = h("div", { "aria-live": "polite" });
  const fromSel = h("select", { id: "diff-from" });
  const toSel = h("select", { id: "diff-to" });
  const diffOut = h("div", { "aria-live": "polite" });
  const diffForm = h(
    "form",
    { class: "row", id: "diff-form" },
    h("div", { class: "field" }, h("label", { for: "diff-from" }, "From version"), fromSel),
    h("div", { class: "field" }, h("label", { for: "diff-to" }, "To version"), toSel),
    h("button", { type: "submit" }, "Show changes"),
  );
  diffForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    fill(diffOut, async () => planView(await api(`/v1/config/diff?from=${enc(fromSel.value)}&to=${enc(toSel.value)}`)));
  });

  const file = h("input", { id: "upload-file", type: "file", accept: ".yaml,.yml,.json" });
  const text = h("textarea", { id: "upload-text", spellcheck: "false" });
  const name = h("input", { id: "upload-name", value: "hunts.yaml", autocomplete: "off" });
  const dry = h("button", { type: "button", id: "upload-dry-run", class: "primary" }, "Dry run");
  const apply = h("button", { type: "button", id: "upload-apply", disabled: true }, "Apply");
  const out = h("div", { id: "upload-result", "aria-live": "polite" });
  let planned = null;
  file.addEventListener("change", async () => {
    if (file.files && file.files[0]) {
      text.value = await file.files[0].text();
      name.value = file.files[0].name;
      apply.disabled = true;
    }
  });
  text.addEventListener("input", () => (apply.disabled = true));
  const put = async (dryRun) => {
    const body = text.value;
    const q = new URLSearchParams({ name: name.value || "hunts.yaml" });
    if (dryRun) q.set("dry_run", "true");
    try {
      const r = await api(`/v1/config?${q}`, { method: "PUT", type: "application/yaml", body });
      if (dryRun) {
        planned = body;
        apply.disabled = false;
        out.replaceChildren(h("div", { class: "ok-box", role: "status", "data-done": "dry-run" }, h("strong", {}, "Dry run: nothing switched. "), `Applying it over version ${r.version_in_force} would:`), planView(r));
      } else {
        apply.disabled = true;
        out.replaceChildren(h("div", { class: "ok-box", role: "status", "data-done": "applied" }, r.unchanged ? `The file is version ${r.version}, already in force; nothing recorded.` : `Version ${r.version} is in force.`), r.summary ? planView(r) : null);
        loadList();
      }
    } catch (e) {
      apply.disabled = true;
      out.replaceChildren(errorBox(e), diagnostics(e));
    }
  };
  dry.addEventListener("click", () => put(true));
  apply.addEventListener("click", () => {
    if (planned === text.value) put(false);
  });

  root.append(
    h("section", { class: "panel", "aria-labelledby": "h-versions" }, h("h2", { id: "h-versions" }, "Versions"), list, shown),
    h("section", { class: "panel", "aria-labelledby": "h-diff" }, h("h2", { id: "h-diff" }, "Compare two versions"), diffForm, diffOut),
    h(
      "section",
      { class: "panel", "aria-labelledby": "h-upload" },
      h("h2", { id: "h-upload" }, "Upload a new version"),
      h("p", { class: "muted" }, "Checked first (every error with its line), its test cases run, then a dry run shows what it changes and for how many customers. Apply puts it in force. Needs a key with the admin role."),
      h("div", { class: "row" }, h("div", { class: "field" }, h("label", { for: "upload-file" }, "Hunts file"), file), h("div", { class: "field" }, h("label", { for: "upload-name" }, "Name"), name)),
      h("div", { class: "field" }, h("label", { for: "upload-text" }, "Hunts file text (YAML or JSON)"), text),
      h("div", { class: "row" }, dry, apply),
      out,
    ),
  );

  const loadList = () =>
    fill(list, async () => {
      const a = await api("/v1/config/versions");
      const options = (sel, pick) => sel.replaceChildren(...a.versions.map((v) => h("option", { value: v.version, selected: v.version === pick }, `${v.version} — ${v.name}`)));
      options(fromSel, a.versions.length > 1 ? a.versions[1].version : a.in_force);
      options(toSel, a.in_force);
      const rows = a.versions.map((v) => {
        const view = h("button", { type: "button", "aria-label": `Show version ${v.version}` }, "Show file");
        view.addEventListener("click", () =>
          fill(shown, async () => {
            const c = await api(`/v1/config/versions/${v.version}`);
            return [h("h3", {}, `Version ${c.version}: ${c.name}`), h("pre", { "data-version-text": c.version }, c.text)];
          }),
        );
        return h("tr", { "data-version": v.version }, h("th", { scope: "row" }, String(v.version)), h("td", {}, v.name), h("td", {}, when(v.in_force_since)), h("td", {}, v.version === a.in_force ? h("span", { class: "state-ok" }, "in force") : ""), h("td", {}, view));
      });
      return table(["Version", "Name", "In force since", "", "File"], rows);
    });
  loadList();
}

// ---------------------------------------------------------------- Cluster

function clusterPage(root) {
  root.append(h("h1", {}, "Cluster"));
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  root.append(body);
  return live(() =>
    fill(body, async () => {
      const c = await api("/v1/cluster");
      if (!c.clustered) {
        return empty(
          h("strong", { "data-figure": "clustered", "data-value": "false" }, "This server is not clustered: "),
          "it runs on one node with its embedded log. ",
          code("hunt serve --cluster URL,…"),
          " runs it on NATS JetStream, with standby nodes that take over a lost node's partitions.",
        );
      }
      const ago = (v) => (v === null || v === undefined ? "—" : v < 0 ? "just now" : `${(v / 1000).toFixed(1)} s ago`);
      const whole = c.status
        ? [
            h("h2", {}, "Nodes"),
            table(
              ["Node", "HTTP", "Owns", "Draining", "Last heartbeat"],
              c.status.nodes.map((n) =>
                h("tr", { "data-node": n.node }, h("th", { scope: "row" }, n.node), h("td", {}, n.http), h("td", { class: "num" }, fmt(n.owned)), h("td", {}, n.draining ? "yes" : "no"), h("td", {}, ago(n.beat_age_ms))),
              ),
              { id: "cluster-nodes" },
            ),
            h("h2", {}, "Partitions"),
            table(
              ["Partition", "Owner", "Lease epoch", "Lease renewed", "End of its subject", "Lag"],
              c.status.partitions.map((p) =>
                h(
                  "tr",
                  { "data-partition": p.partition, "data-owner": p.owner ?? "" },
                  h("th", { scope: "row" }, String(p.partition)),
                  h("td", {}, p.owner ?? h("span", { class: "state-bad" }, "none")),
                  h("td", { class: "num" }, fmt(p.epoch)),
                  h("td", {}, ago(p.renewed_age_ms)),
                  h("td", { class: "num" }, fmt(p.end)),
                  h("td", { class: "num" }, p.lag === null || p.lag === undefined ? "unknown" : fmt(p.lag)),
                ),
              ),
              { id: "cluster-partitions" },
            ),
            h("p", { class: "muted" }, "Lag is how far the owner's position, at its last heartbeat, is behind the end of the partition's subject, in stream sequence numbers. Ages compare this node's clock with the other's. The same as ", code("hunt cluster status"), "."),
          ]
        : [h("p", { class: "state-bad" }, "The cluster's nodes and partitions could not be read: ", c.status_error ?? "no answer", ". ", code("hunt cluster status"), " reads them too.")];
      return [
        h("p", {}, "Log: ", code(c.log), ". Lease left on this node's partitions: ", figure("lease_left_s", c.lease_left_s, dur(c.lease_left_s)), "."),
        ...whole,
        h("h2", {}, "This node's queues"),
        table(
          ["Partition", "Backlog (events)", "Applied per second", "Time to drain"],
          c.partitions.map((p) => h("tr", {}, h("th", { scope: "row" }, String(p.partition)), h("td", { class: "num" }, fmt(p.backlog)), h("td", { class: "num" }, fmt(p.applied_per_s)), h("td", { class: "num" }, p.backlog === 0 ? "—" : dur(p.time_to_drain_s)))),
          { id: "cluster-queues" },
        ),
      ];
    }),
  );
}

// ---------------------------------------------------------------- routing

const PAGES = {
  overview: ["Overview", overviewPage],
  hunts: ["Hunts", huntsPage],
  pools: ["Pools", poolsPage],
  customer: ["Customer lookup", customerPage],
  dlq: ["Dead letters", dlqPage],
  versions: ["Versions", versionsPage],
  cluster: ["Cluster", clusterPage],
};

let stopPage = null;

function route(focus) {
  const name = location.hash.replace(/^#\/?/, "").split("?")[0] || "overview";
  const [title, page] = PAGES[name] || PAGES.overview;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("data-page") === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (stopPage) stopPage();
  stopPage = null;
  main.replaceChildren();
  main.setAttribute("data-page", name);
  document.title = `${title} — Treasure Hunt Engine`;
  stopPage = page(main) || null;
  if (focus) main.focus();
}

async function start() {
  showKeyState();
  try {
    const o = await api("/v1/overview");
    setMode(o.development);
  } catch (_) {
    // The page itself shows why (a key is needed, the server is starting).
  }
  window.addEventListener("hashchange", () => route(true));
  route(false);
}

start();
