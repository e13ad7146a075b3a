//! The dashboard in a real browser: headless Chromium, driven through chromedriver's
//! WebDriver protocol by the small client below, against `hunt serve` with traffic.
//! Each page's figures are checked against the API's answers; a dead letter is retried
//! from the page and reaches a test receiver; a bad hunts file's errors show with their
//! lines; a read key cannot act; every page answers with the Content-Security-Policy,
//! and the browser's console holds no error (a policy violation would be one).
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`: on first
//! use the helper runs `.ci/install-chromium`, and fails, saying what to install, if
//! it cannot. Screenshots of each page go to `target/dashboard-screenshots`, or to
//! `HUNT_SCREENSHOTS` when set (`docs/dashboard` holds the published ones).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::crash::request;
use super::root;
use super::serve::read_log;

// ------------------------------------------------------------------ the browser

/// chromedriver's path, installing Chromium once per test process if it is missing.
fn chromedriver() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let out = Command::new(root().join(".ci/install-chromium"))
                .stderr(Stdio::piped())
                .output()
                .map_err(|e| e.to_string())?;
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && Path::new(&path).exists() {
                Ok(PathBuf::from(path))
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        })
        .clone()
        .unwrap_or_else(|e| {
            panic!(
                "the dashboard's browser tests need Chromium and chromedriver, and \
                 .ci/install-chromium could not install them ({e}). Install Debian's \
                 `chromium` and `chromium-driver` (apt-get install chromium chromium-driver) \
                 and run the tests again."
            )
        })
}

/// A raw HTTP/1.1 exchange: (status, headers in lower case, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut head = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            head.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let chunked = head
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let mut raw = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            raw.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = head
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        raw.resize(n, 0);
        r.read_exact(&mut raw).unwrap();
    } else {
        let _ = r.read_to_end(&mut raw);
    }
    (status, head, String::from_utf8_lossy(&raw).into_owned())
}

/// One Chromium, headless, with a fresh profile, under its own chromedriver.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            &[],
            "",
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    fn start() -> Browser {
        let driver_path = chromedriver();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let t = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
                format!("--user-data-dir={}", profile.path().display()),
                "--window-size=1280,900",
            ]}
        }}});
        let (status, _, body) = http(
            addr,
            "POST",
            "/session",
            &[("Content-Type", "application/json")],
            &caps.to_string(),
        );
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(status, 200, "no WebDriver session: {body}");
        let session = v["value"]["sessionId"].as_str().unwrap().to_string();
        Browser {
            driver,
            addr,
            session,
            _profile: profile,
        }
    }

    /// A WebDriver command: its `value`, or a panic with the driver's error.
    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if method == "GET" || method == "DELETE" {
            String::new()
        } else {
            body.to_string()
        };
        let (status, _, text) = http(
            self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            &[("Content-Type", "application/json")],
            &body,
        );
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(status, 200, "{method} {path}: {text}");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page with `args`.
    fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
    }

    /// The elements matching a CSS selector (their WebDriver references).
    fn all(&self, css: &str) -> Vec<Value> {
        self.cmd(
            "POST",
            "/elements",
            json!({ "using": "css selector", "value": css }),
        )
        .as_array()
        .cloned()
        .unwrap_or_default()
    }

    fn id(el: &Value) -> String {
        el.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("an element reference")
            .to_string()
    }

    /// Waits (up to a minute, for a slow machine) until `css` matches an element
    /// whose text `ok` accepts; its text.
    fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            // In one script: a live page may replace the elements between two calls.
            let texts: Vec<String> = self
                .js(
                    "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText);",
                    json!([css]),
                )
                .as_array()
                .map(|a| a.iter().map(|t| t.as_str().unwrap_or_default().to_string()).collect())
                .unwrap_or_default();
            if let Some(found) = texts.iter().find(|t| ok(t)) {
                return found.clone();
            }
            if t.elapsed() > Duration::from_secs(60) {
                let page = self.js("return document.body.innerText;", json!([]));
                panic!(
                    "`{css}` never showed what was expected; it shows {texts:?}; the page:\n{page}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `data-value` of the first `css` (waiting until it is there).
    fn value(&self, css: &str) -> String {
        self.wait_text(css, |_| true);
        self.js(
            "return document.querySelector(arguments[0]).getAttribute('data-value');",
            json!([css]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Clicks the first `css` as a person would (WebDriver's click: scrolled into
    /// view, hit-tested), trying again if a live page replaced it meanwhile.
    fn click(&self, css: &str) {
        for _ in 0..20 {
            self.wait_text(css, |_| true);
            let Some(el) = self.all(css).into_iter().next() else {
                continue;
            };
            let (status, _, text) = http(
                self.addr,
                "POST",
                &format!(
                    "/session/{}/element/{}/click",
                    self.session,
                    Browser::id(&el)
                ),
                &[("Content-Type", "application/json")],
                "{}",
            );
            if status == 200 {
                return;
            }
            assert!(text.contains("stale element"), "click {css}: {text}");
        }
        panic!("`{css}` was replaced each time it was to be clicked");
    }

    fn type_into(&self, css: &str, text: &str) {
        self.wait_text(css, |_| true);
        let el = &self.all(css)[0];
        let id = Browser::id(el);
        self.cmd("POST", &format!("/element/{id}/clear"), json!({}));
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        );
    }

    /// The console's entries at or over `SEVERE` since the last call.
    fn console_errors(&self) -> Vec<String> {
        self.cmd("POST", "/se/log", json!({ "type": "browser" }))
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Presses a key (a WebDriver key code, e.g. `\u{E004}` for Tab) on whatever has
    /// the focus, as a keyboard would.
    fn press(&self, key: &str) {
        self.cmd(
            "POST",
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]}),
        );
    }

    /// Tabs through the page from its top: every control the keyboard reaches, as
    /// (its tag, its accessible name); panics on a control without a name.
    fn tab_through(&self) -> Vec<(String, String)> {
        self.js(
            "document.activeElement.blur(); window.scrollTo(0, 0);",
            json!([]),
        );
        let mut seen: Vec<(String, String)> = Vec::new();
        for _ in 0..200 {
            self.press(TAB);
            let v = self.js(
                "const e = document.activeElement;
                 if (!e || e === document.body) return null;
                 const label = e.getAttribute('aria-label')
                   || (e.labels && e.labels.length ? e.labels[0].innerText : '')
                   || (e.tagName === 'A' || e.tagName === 'BUTTON' || e.tagName === 'SUMMARY' ? e.innerText : '');
                 return [e.tagName.toLowerCase() + (e.id ? '#' + e.id : ''), label.trim()];",
                json!([]),
            );
            let Some(pair) = v.as_array() else { continue };
            let tag = pair[0].as_str().unwrap_or_default().to_string();
            let name = pair[1].as_str().unwrap_or_default().to_string();
            assert!(!name.is_empty(), "{tag} has no accessible name");
            if seen.first() == Some(&(tag.clone(), name.clone())) {
                break; // round the page once
            }
            seen.push((tag, name));
        }
        seen
    }

    /// Presses Tab until the control named `name` has the focus.
    fn tab_to(&self, name: &str) {
        for _ in 0..200 {
            self.press(TAB);
            let focused = self.js(
                "const e = document.activeElement; return e ? (e.getAttribute('aria-label') || e.innerText || '') : '';",
                json!([]),
            );
            if focused.as_str() == Some(name) {
                return;
            }
        }
        panic!("Tab never reaches {name}");
    }

    fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            json!({ "width": width, "height": height }),
        );
    }

    /// A PNG of the whole page at `width`, into the screenshots' directory.
    fn screenshot(&self, width: u32, name: &str) {
        self.resize(width, 900);
        self.js("window.scrollTo(0, 0);", json!([]));
        let height = self
            .js(
                "return Math.ceil(document.documentElement.scrollHeight);",
                json!([]),
            )
            .as_u64()
            .unwrap_or(900)
            .clamp(600, 4000) as u32;
        self.resize(width, height);
        let b64 = self.cmd("GET", "/screenshot", json!({}));
        let png = base64(b64.as_str().unwrap());
        let dir = std::env::var_os("HUNT_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target/dashboard-screenshots"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        self.resize(1280, 900);
    }
}

const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(val(*c)) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

// ------------------------------------------------------------------ the server

/// A webhook receiver that refuses every delivery (503) until told to accept; it
/// records the idempotency keys of the deliveries it accepted.
struct Receiver {
    addr: SocketAddr,
    accept: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<String>>>,
}

fn receiver() -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = Arc::new(AtomicBool::new(false));
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let (a, got) = (accept.clone(), accepted.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (a, got) = (a.clone(), got.clone());
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let (mut key, mut len) = (String::new(), 0usize);
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':') {
                            match k.to_ascii_lowercase().as_str() {
                                "idempotency-key" => key = v.trim().to_string(),
                                "content-length" => len = v.trim().parse().unwrap_or(0),
                                _ => {}
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let status = if a.load(Ordering::SeqCst) {
                        got.lock().unwrap().push(key);
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    };
                    let _ = w.write_all(
                        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                    );
                }
            });
        }
    });
    Receiver {
        addr,
        accept,
        accepted,
    }
}

/// The quick start's hunt, notifying a sink.
fn hunts_file(sink: SocketAddr) -> String {
    let welcome = std::fs::read_to_string(root().join("examples/welcome.yaml")).unwrap();
    let body = welcome.split("\ntests:").next().unwrap();
    let body = body.replace(
        "    reward: { pool: welcome-10, per_user: 1 }",
        "    reward: { pool: welcome-10, per_user: 1 }\n    notify: [crm]",
    );
    body.replace(
        "\nhunts:\n",
        &format!(
            "\nsinks:\n  - {{ id: crm, url: \"http://{sink}/hook\", max_attempts: 1, breaker_failures: 1000 }}\n\nhunts:\n"
        ),
    )
}

struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(hunts: &str, keys: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hunts.yaml");
    std::fs::write(&config, hunts).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hunt"));
    // Run in the temporary directory, so the version's name is the file's own.
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        "hunts.yaml",
        "--data",
        "data",
    ])
    .current_dir(dir.path())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if let Some(k) = keys {
        let path = dir.path().join("keys");
        std::fs::write(&path, k).unwrap();
        cmd.arg("--keys").arg(path);
    }
    let mut child = cmd.spawn().expect("hunt serve starts");
    let (_log, rx, _reader) = read_log(&mut child);
    let addr: SocketAddr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server says where it listens")
        .parse()
        .unwrap();
    let t = Instant::now();
    while http(addr, "GET", "/readyz", &[], "").0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(30), "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server {
        child,
        addr,
        _dir: dir,
    }
}

fn eggs(user: &str) -> String {
    json!([
        {"id": format!("{user}-1"), "user": user, "type": "product_view", "data": {"category": "shoes"}},
        {"id": format!("{user}-2"), "user": user, "type": "page_view", "data": {"url": "/blog/egg-hunt"}},
        {"id": format!("{user}-3"), "user": user, "type": "search", "data": {"query": "golden egg"}},
    ])
    .to_string()
}

/// GET `path` as JSON, with `key` if given.
fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> Value {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let (status, _, body) = http(addr, "GET", path, &headers, "");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(60), "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ------------------------------------------------------------------ the tests

#[test]
fn every_page_answers_with_the_policy_and_shows_the_apis_figures() {
    let sink = receiver();
    let s = serve(&hunts_file(sink.addr), None);
    let ui = format!("http://{}/ui/", s.addr);

    // The assets: their types, the policy, no sniffing, no referrer, and a 304 for an
    // unchanged one.
    for (path, ty) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/charts.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/nothing-here", "application/json"),
    ] {
        let (status, head, _) = http(s.addr, "GET", path, &[], "");
        let h = |name: &str| {
            head.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            status,
            if path == "/ui/nothing-here" { 404 } else { 200 },
            "{path}"
        );
        assert!(h("content-type").starts_with(ty), "{path}: {head:?}");
        assert_eq!(h("content-security-policy"), hunt_server_csp(), "{path}");
        assert_eq!(h("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{path}");
        if status == 200 {
            let etag = h("etag");
            assert!(!etag.is_empty(), "{path}");
            let (again, _, _) = http(s.addr, "GET", path, &[("If-None-Match", &etag)], "");
            assert_eq!(again, 304, "{path}");
        }
    }
    let (status, head, _) = http(s.addr, "GET", "/", &[], "");
    assert_eq!(status, 308);
    assert!(
        head.contains(&("location".into(), "/ui/".into())),
        "{head:?}"
    );

    // Traffic: four customers find the three eggs (three codes, one denial), a fifth
    // finds one. Every outcome is a dead letter: the receiver refuses them all.
    for u in ["ann", "bob", "cy", "dee"] {
        assert_eq!(
            request(s.addr, "POST", "/v1/events", &eggs(u)).unwrap().0,
            200
        );
    }
    let one = json!({"id": "eve-1", "user": "eve", "type": "product_view", "data": {"category": "shoes"}});
    assert_eq!(
        request(s.addr, "POST", "/v1/events", &one.to_string())
            .unwrap()
            .0,
        200
    );
    // 4 × 3 steps + 4 completions + 3 grants + 1 denial + 1 step.
    wait_until("every outcome is a dead letter", || {
        get(s.addr, "/v1/dlq?limit=1", None)["total"] == 21
    });

    let b = Browser::start();

    // Overview: the development banner, the version, the sink's figures, partitions.
    b.goto(&ui);
    b.wait_text("#banner", |t| t.contains("Development mode"));
    let o = get(s.addr, "/v1/overview", None);
    assert_eq!(b.value("[data-figure=version]"), o["version"].to_string());
    assert_eq!(b.value("[data-sink=crm] [data-figure=dead_letters]"), "21");
    assert_eq!(
        b.value("[data-sink=crm] [data-figure=breaker]"),
        o["sinks"][0]["breaker"].as_str().unwrap()
    );
    assert_eq!(
        b.all("[data-partition]").len(),
        o["partitions"].as_array().unwrap().len()
    );
    assert_eq!(b.value("main [data-figure=backlog]"), "0");
    b.screenshot(1280, "overview");
    b.screenshot(390, "overview-390");

    // Hunts: the funnel, completions and denials are the stats'.
    b.goto(&format!("{ui}#/hunts"));
    let stats = get(s.addr, "/v1/hunts/three-eggs/stats", None);
    let hunt = "[data-hunt=three-eggs]";
    assert_eq!(
        b.value(&format!("{hunt} [data-figure=participants]")),
        stats["participants"].to_string()
    );
    for step in stats["funnel"].as_array().unwrap() {
        let name = step["step"].as_str().unwrap();
        assert_eq!(
            b.value(&format!("{hunt} [data-figure='step:{name}']")),
            step["found"].to_string()
        );
    }
    assert_eq!(b.value(&format!("{hunt} [data-figure=completions]")), "4");
    assert_eq!(
        b.value(&format!("{hunt} [data-figure=rewards_granted]")),
        "3"
    );
    assert_eq!(
        b.value(&format!("{hunt} [data-figure='denied:pool_empty']")),
        "1"
    );
    b.wait_text(hunt, |t| t.contains("Always on"));
    let history = get(s.addr, "/v1/hunts/three-eggs/history", None);
    assert_eq!(history["time_to_complete"]["completions"], 4, "{history}");
    assert_eq!(
        b.value(&format!("{hunt} [data-figure=ttc_completions]")),
        "4"
    );
    assert_eq!(
        b.value(&format!("{hunt} [data-figure=ttc_median_s]"))
            .parse::<f64>()
            .ok(),
        history["time_to_complete"]["median_s"].as_f64()
    );
    b.screenshot(1280, "hunts");
    b.screenshot(390, "hunts-390");
    // The page reads again by itself: a new participant shows without a reload.
    let more = json!({"id": "fay-1", "user": "fay", "type": "search", "data": {"query": "egg"}});
    assert_eq!(
        request(s.addr, "POST", "/v1/events", &more.to_string())
            .unwrap()
            .0,
        200
    );
    b.wait_text(&format!("{hunt} [data-figure=participants]"), |t| t == "6");

    // Pools.
    b.goto(&format!("{ui}#/pools"));
    assert_eq!(
        b.value("[data-pool=welcome-10] [data-figure=remaining]"),
        "0"
    );
    assert_eq!(b.value("[data-pool=welcome-10] [data-figure=granted]"), "3");
    b.screenshot(1280, "pools");

    // Customer lookup: ann's code is the API's.
    b.goto(&format!("{ui}#/customer"));
    b.type_into("#customer-id", "ann");
    b.click("#customer-form button[type=submit]");
    let ann = get(s.addr, "/v1/users/ann", None);
    assert_eq!(
        b.value("[data-customer=ann] [data-figure=code]"),
        ann["rewards"][0]["code"].as_str().unwrap()
    );
    b.wait_text("[data-customer=ann]", |t| {
        t.contains("completed") || t.contains("Completed")
    });
    b.screenshot(1280, "customer");

    // Dead letters: the count, then one retried from the page reaches the receiver.
    wait_until("fay's find is a dead letter too", || {
        get(s.addr, "/v1/dlq?limit=1", None)["total"] == 22
    });
    b.goto(&format!("{ui}#/dlq"));
    assert_eq!(b.value("[data-figure=total]"), "22");
    b.click("#retry-all");
    b.wait_text(".confirm", |t| {
        t.contains("Retry 22 dead letters in the queue?")
    });
    b.click("#confirm-no");
    b.screenshot(1280, "dead-letters");
    sink.accept.store(true, Ordering::SeqCst);
    let first = get(s.addr, "/v1/dlq?limit=1", None)["entries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // By keyboard alone: Tab to the first row's Retry, Enter, and Enter again on the
    // confirmation (which takes the focus). Every control on the way has a name.
    let reached = b.tab_through();
    for name in [
        "Overview",
        "Dead letters",
        "API key",
        "Sink",
        "Hunt",
        "Dead since",
        "Filter",
        "Retry all 22",
    ] {
        assert!(
            reached.iter().any(|(_, n)| n == name),
            "Tab never reaches {name}: {reached:?}"
        );
    }
    b.tab_to(&format!("Retry {first}"));
    b.press(ENTER);
    b.wait_text(".confirm", |t| t.contains("Retry 1 dead letter"));
    b.press(ENTER);
    b.wait_text("[data-done=retry]", |t| t.contains("Retried 1 dead letter"));
    wait_until("the retried dead letter reaches the receiver", || {
        sink.accepted.lock().unwrap().contains(&first)
    });
    wait_until("the dead letter left the queue", || {
        get(s.addr, "/v1/dlq?limit=1", None)["total"] == 21
    });
    assert_eq!(
        sink.accepted.lock().unwrap().len(),
        1,
        "only the one retried"
    );

    let errors = b.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");

    // Versions: a bad file's errors with their lines, as the API gives them.
    b.goto(&format!("{ui}#/versions"));
    b.wait_text("[data-version='1']", |t| t.contains("in force"));
    let reached = b.tab_through();
    for name in [
        "From version",
        "To version",
        "Show changes",
        "Hunts file",
        "Name",
        "Hunts file text (YAML or JSON)",
        "Dry run",
    ] {
        assert!(
            reached.iter().any(|(_, n)| n == name),
            "Tab never reaches {name}: {reached:?}"
        );
    }
    let bad = "version: 1\nhunts:\n  - id: h\n    steps:\n      - { id: s, on: search, when: \"event.data.q ==\" }\n";
    b.type_into("#upload-text", bad);
    b.click("#upload-dry-run");
    let (status, _, body) = http(
        s.addr,
        "PUT",
        "/v1/config?dry_run=true",
        &[("Content-Type", "application/yaml")],
        bad,
    );
    assert_eq!(status, 422, "{body}");
    let expected: Value = serde_json::from_str(&body).unwrap();
    let lines: Vec<String> = expected["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("at line {}, column {}", d["line"], d["column"]))
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        b.wait_text("#upload-diagnostics li", |t| t.contains(l.as_str()));
    }
    b.screenshot(1280, "versions-errors");
    // A good file: planned, applied, listed.
    let good = hunts_file(sink.addr).replace("Three hidden eggs", "Three eggs, renamed");
    b.type_into("#upload-text", &good);
    b.click("#upload-dry-run");
    b.wait_text("[data-done=dry-run]", |t| t.contains("nothing switched"));
    b.click("#upload-apply");
    b.wait_text("[data-done=applied]", |t| {
        t.contains("Version 2 is in force")
    });
    b.wait_text("[data-version='2']", |t| t.contains("in force"));
    b.screenshot(1280, "versions");

    // Cluster: a single node says so.
    b.goto(&format!("{ui}#/cluster"));
    b.wait_text("main", |t| t.contains("This server is not clustered"));
    b.screenshot(1280, "cluster");

    // The refused upload's 422 is logged as a failed load; nothing else may be, and
    // no policy violation at all.
    let errors: Vec<String> = b
        .console_errors()
        .into_iter()
        .filter(|e| {
            !(e.contains("/v1/config?")
                && e.contains("dry_run=true")
                && e.contains("status of 422"))
        })
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
}

/// The policy as the server sends it.
fn hunt_server_csp() -> &'static str {
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
}

#[test]
fn a_read_key_sees_the_pages_and_cannot_act() {
    let sink = receiver();
    let keys = "reports read read-secret-0123456789\nops admin admin-secret-0123456789\n";
    let s = serve(&hunts_file(sink.addr), Some(keys));
    let admin = Some("admin-secret-0123456789");
    assert_eq!(
        request(s.addr, "POST", "/v1/events", &eggs("ann"))
            .unwrap()
            .0,
        401
    );
    let b = Browser::start();
    let ui = format!("http://{}/ui/", s.addr);

    // No key: the page says one is needed, and no development banner.
    b.goto(&ui);
    b.wait_text("#banner", |t| t.contains("An API key is needed"));
    b.type_into("#key-input", "read-secret-0123456789");
    b.click("#key-use");
    let o = get(s.addr, "/v1/overview", admin);
    assert_eq!(o["development"], false);
    assert_eq!(b.value("[data-figure=version]"), "1");
    // The key works: the banner that asked for one is gone, and none says
    // development mode.
    b.wait_text("#banner", |t| t.is_empty());

    // Dead letters and versions need admin: the 403's message shows, nothing is done.
    b.goto(&format!("{ui}#/dlq"));
    b.wait_text("main .error-box", |t| t.contains("lacks the `admin` role"));
    b.goto(&format!("{ui}#/versions"));
    b.type_into(
        "#upload-text",
        &hunts_file(sink.addr).replace("Three hidden", "Other"),
    );
    b.click("#upload-dry-run");
    b.wait_text("#upload-result .error-box", |t| {
        t.contains("Not allowed with this key") && t.contains("lacks the `admin` role")
    });
    assert_eq!(get(s.addr, "/v1/config", admin)["version"], 1);

    // The admin key acts.
    b.type_into("#key-input", "admin-secret-0123456789");
    b.click("#key-use");
    b.goto(&format!("{ui}#/dlq"));
    b.wait_text("main", |t| t.contains("No dead letters"));
}

#[test]
fn on_a_cluster_the_cluster_page_shows_the_log_the_lease_and_the_partitions() {
    let nats = hunt_cluster::testing::NatsCluster::start(3, false);
    nats.wait_ready(Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hunts.yaml"), hunts_file(receiver().addr)).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hunt"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config", "hunts.yaml"])
        .args(["--data", "data", "--cluster", &nats.urls().join(",")])
        .args(["--cluster-monitor", &nats.monitor_urls().join(",")])
        .args([
            "--cluster-name",
            "dash",
            "--partitions",
            "4",
            "--node-id",
            "a",
        ])
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("hunt serve starts");
    let (log, rx, _reader) = read_log(&mut child);
    let mut s = Server {
        child,
        addr: rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the node listens")
            .parse()
            .unwrap(),
        _dir: dir,
    };
    // The node answers as a standby until it owns its partitions; should it stop
    // instead, its log says why.
    let t = Instant::now();
    loop {
        if let Ok(Some(status)) = s.child.try_wait() {
            panic!("the node stopped ({status}):\n{}", log.lock().unwrap());
        }
        if TcpStream::connect(s.addr).is_ok() && http(s.addr, "GET", "/readyz", &[], "").0 == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the node never owned its partitions:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = get(s.addr, "/v1/cluster", None);
    assert_eq!(c["clustered"], true, "{c}");
    assert_eq!(c["partitions"].as_array().map(Vec::len), Some(4), "{c}");
    let log = c["log"].as_str().unwrap().to_string();
    // The whole cluster, as `hunt cluster status` reads it: node a, owning all four.
    let mut c = c;
    wait_until("node a's heartbeat with its partitions", || {
        c = get(s.addr, "/v1/cluster", None);
        c["status"]["nodes"][0]["owned"] == 4
    });
    assert_eq!(c["status"]["nodes"][0]["node"], "a", "{c}");
    let owners: Vec<&Value> = c["status"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["owner"])
        .collect();
    assert_eq!(owners, vec!["a"; 4], "{c}");

    let b = Browser::start();
    b.goto(&format!("http://{}/ui/#/cluster", s.addr));
    b.wait_text("main", |t| {
        t.contains(&log) && t.contains("hunt cluster status")
    });
    b.wait_text("#cluster-nodes", |t| {
        t.contains("a") && t.contains(&s.addr.to_string())
    });
    assert_eq!(b.all("#cluster-partitions tbody tr").len(), 4);
    assert_eq!(
        b.all("#cluster-partitions tbody tr[data-owner='a']").len(),
        4
    );
    assert_eq!(b.all("#cluster-queues tbody tr").len(), 4);
    b.screenshot(1280, "cluster-clustered");
}

#[test]
fn empty_pages_say_what_to_do() {
    let s = serve("version: 1\n", None);
    let b = Browser::start();
    let ui = format!("http://{}/ui/", s.addr);
    b.goto(&format!("{ui}#/hunts"));
    b.wait_text("main .empty", |t| {
        t.contains("No hunts yet — PUT a hunts file") && t.contains("--config")
    });
    b.goto(&format!("{ui}#/pools"));
    b.wait_text("main .empty", |t| t.contains("No reward pools"));
    b.goto(&format!("{ui}#/overview"));
    b.wait_text("main .empty", |t| t.contains("No sinks"));
    b.goto(&format!("{ui}#/dlq"));
    b.wait_text("main .empty", |t| t.contains("No dead letters"));
    b.goto(&format!("{ui}#/customer"));
    b.type_into("#customer-id", "nobody");
    b.press(ENTER);
    b.wait_text("main .empty", |t| {
        t.contains("No events were ever accepted for customer nobody")
    });
}
