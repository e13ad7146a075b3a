//! API keys and roles.

use hunt_server::auth::Keys;
use serde_json::json;

use crate::common::*;

const KEYS: &str = "\
# name   roles        secret
shop     ingest       ingest-secret-0123456789
reports  read         read-secret-0123456789
ops      admin        admin-secret-0123456789
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_opens_its_endpoints_only() {
    let (_d, dir) = tempdir();
    let keys = Keys::parse(KEYS, "keys").unwrap();
    let mut s = Server::start(
        &dir,
        Options {
            keys,
            ..Options::default()
        },
    )
    .await;

    // No key, a wrong key.
    let (st, e) = s.post(ev("a1", "ann", "page_view", json!({}))).await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{e}"
    );
    s.key = Some("ingest-secret-0123456789x".into());
    let (st, _) = s.post(ev("a1", "ann", "page_view", json!({}))).await;
    assert_eq!(st, 401);
    // A 401 says how to authenticate.
    let r = s
        .client
        .post(format!("{}/v1/events", s.url))
        .header("content-type", "application/json")
        .body(ev("a1", "ann", "page_view", json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Bearer realm=\"hunt\"")
    );
    // The scheme's name is matched without regard to case.
    let r = s
        .client
        .get(format!("{}/v1/users/ann", s.url))
        .header("authorization", "bearer read-secret-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "known key, unknown customer");
    assert!(r.headers().get("www-authenticate").is_none());

    // ingest: post only.
    s.key = Some("ingest-secret-0123456789".into());
    let (st, _) = s
        .post(ev("a1", "ann", "page_view", json!({"url": "/blog"})))
        .await;
    assert_eq!(st, 200);
    let (st, e) = s.get("/v1/users/ann").await;
    assert_eq!(st, 403, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("`read`"));
    let (st, _) = s.put_config(EGGS).await;
    assert_eq!(st, 403);

    // read: queries only.
    s.key = Some("read-secret-0123456789".into());
    let (st, _) = s.get("/v1/users/ann").await;
    assert_eq!(st, 200);
    let (st, _) = s.post(ev("a2", "ann", "page_view", json!({}))).await;
    assert_eq!(st, 403);
    let (st, _) = s.get("/v1/config").await;
    assert_eq!(st, 403);

    // admin: everything, also through X-Api-Key.
    s.key = None;
    let r = s
        .client
        .get(format!("{}/v1/config", s.url))
        .header("x-api-key", "admin-secret-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.key = Some("admin-secret-0123456789".into());
    let (st, _) = s.put_config(EGGS).await;
    assert_eq!(st, 200);
    let (st, _) = s.post(ev("a3", "ann", "page_view", json!({}))).await;
    assert_eq!(st, 200);

    // Health, readiness and metrics need no key.
    s.key = None;
    assert_eq!(s.get("/readyz").await.0, 200);
    assert_eq!(s.get("/metrics").await.0, 200);
    s.stop().await.unwrap();
}

#[test]
fn without_keys_only_loopback_is_allowed() {
    let http = hunt_server::http::HttpConfig {
        limits: Default::default(),
        keys: Keys::default(),
        rate_per_key: None,
        rate_per_user: None,
        conn: Default::default(),
    };
    let e =
        hunt_server::server::check_exposure(&"0.0.0.0:8080".parse().unwrap(), &http).unwrap_err();
    assert!(e.contains("without API keys"), "{e}");
    assert!(hunt_server::server::check_exposure(&"127.0.0.1:8080".parse().unwrap(), &http).is_ok());
    assert!(hunt_server::server::check_exposure(&"[::1]:8080".parse().unwrap(), &http).is_ok());
    let with_keys = hunt_server::http::HttpConfig {
        keys: Keys::parse(KEYS, "k").unwrap(),
        ..http
    };
    assert!(
        hunt_server::server::check_exposure(&"0.0.0.0:8080".parse().unwrap(), &with_keys).is_ok()
    );
}
