//! Live hunts-file versions: validation with diagnostics, an atomic switch, the version
//! kept in the log and used again by a replay.

use serde_json::json;

use crate::common::*;

/// The eggs hunt plus a second hunt, and a bigger pool.
fn version_two() -> String {
    EGGS.replace("codes: [W-1, W-2, W-3]", "codes: [W-1, W-2, W-3, W-4]")
        + r#"
  - id: cart
    steps: [{ id: big, on: cart_add, when: 'event.data.price >= 100' }]
"#
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_hunts_file_is_validated_recorded_and_switched() {
    let (_d, dir) = tempdir();
    let s = Server::start(&dir, Options::default()).await;
    let (_, c) = s.get("/v1/config").await;
    assert_eq!(c["version"], 1, "{c}");
    s.post(json!(three_eggs("ann"))).await;
    let (_, a) = s
        .post(ev("c0", "ann", "cart_add", json!({"price": 120})))
        .await;
    assert_eq!(kinds(&a, 0), Vec::<String>::new(), "no cart hunt yet");

    // A broken file: 422 with every problem and where it is; nothing changes.
    let broken = version_two().replace("event.data.price >= 100", "evnt.data.price >= 100")
        + "\n    oops: 1\n";
    let (st, e) = s.put_config(&broken).await;
    assert_eq!(st, 422, "{e}");
    assert_eq!(e["error"]["code"], "invalid_hunts_file");
    let text = e["error"]["details"].to_string();
    assert!(
        text.contains("evnt") && text.contains("did you mean `event`"),
        "{text}"
    );
    assert!(text.contains("oops"), "{text}");
    assert!(
        e["error"]["details"]["problems"][0]["line"].is_number() || text.contains("\"line\""),
        "{text}"
    );
    let (_, c) = s.get("/v1/config").await;
    assert_eq!(c["version"], 1);

    // A good one: in force at once, for every partition.
    let (st, r) = s.put_config(&version_two()).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["version"], 2);
    let (_, c) = s.get("/v1/config").await;
    assert_eq!(
        (c["version"].as_u64(), c["hunts"].as_u64()),
        (Some(2), Some(2))
    );
    for u in ["p1", "p2", "p3", "p4", "p5"] {
        let (_, a) = s
            .post(ev(&format!("{u}-c"), u, "cart_add", json!({"price": 150})))
            .await;
        assert_eq!(kinds(&a, 0), ["step_found", "hunt_completed"], "{a}");
    }
    // The pool grew and kept its grants: the next egg finder gets W-2, then W-4 is left.
    let (_, a) = s.post(json!(three_eggs("bo"))).await;
    assert_eq!(a["results"][2]["outcomes"][2]["code"], "W-2", "{a}");
    let (_, stats) = s.get("/v1/hunts/eggs/stats").await;
    assert_eq!(stats["reward"]["remaining"], 2, "{stats}");
    let before = (
        s.get("/v1/hunts/cart/stats").await.1,
        s.get("/v1/hunts/eggs/stats").await.1,
    );
    s.stop().await.unwrap();

    // The log replays each event under the version in force when it arrived.
    std::fs::remove_dir_all(dir.join("snapshots")).unwrap();
    let s = Server::start_again(&dir).await;
    let (_, c) = s.get("/v1/config").await;
    assert_eq!(c["version"], 2);
    let after = (
        s.get("/v1/hunts/cart/stats").await.1,
        s.get("/v1/hunts/eggs/stats").await.1,
    );
    assert_eq!(after, before);
    let (_, u) = s.get("/v1/users/ann").await;
    assert_eq!(
        u["hunts"].as_array().unwrap().len(),
        1,
        "ann's cart_add came before version 2: {u}"
    );
    s.stop().await.unwrap();

    // Starting with a file that differs records it as the next version.
    let s = Server::start(
        &dir,
        Options {
            hunts: Some(EGGS.into()),
            ..Options::default()
        },
    )
    .await;
    let (_, c) = s.get("/v1/config").await;
    assert_eq!(c["version"], 3);
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_needs_a_hunts_file_and_a_good_one() {
    let (_d, dir) = tempdir();
    let e = Server::try_start(
        &dir,
        Options {
            hunts: None,
            ..Options::default()
        },
    )
    .await
    .err()
    .unwrap();
    assert!(e.contains("--config"), "{e}");
    let e = Server::try_start(
        &dir,
        Options {
            hunts: Some("version: 1\nhunts: [{id: 1}]".into()),
            ..Options::default()
        },
    )
    .await
    .err()
    .unwrap();
    assert!(e.contains("error"), "{e}");
}

/// Hunt `two` with steps `a` and `b`; `extra` adds steps after them.
fn two_steps(extra: &str) -> String {
    format!(
        r#"
version: 1
hunts:
  - id: two
    steps:
      - {{ id: a, on: page_view, when: 'event.data.url == "/a"' }}
      - {{ id: b, on: page_view, when: 'event.data.url == "/b"' }}
{extra}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_added_to_a_hunt_in_progress_is_found_and_the_server_stays_up() {
    let (_d, dir) = tempdir();
    let opts = || Options {
        hunts: Some(two_steps("")),
        ..Options::default()
    };
    let s = Server::start(&dir, opts()).await;
    let (_, a) = s
        .post(ev("1", "u1", "page_view", json!({"url": "/a"})))
        .await;
    assert_eq!(kinds(&a, 0), ["step_found"], "{a}");
    let v2 = two_steps("      - { id: c, on: page_view, when: 'event.data.url == \"/c\"' }\n");
    let (st, r) = s.put_config(&v2).await;
    assert_eq!(st, 200, "{r}");
    // The step added after the customer joined: found, no crash, nothing completed yet.
    let (st, a) = s
        .post(ev("2", "u1", "page_view", json!({"url": "/c"})))
        .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(kinds(&a, 0), ["step_found"], "{a}");
    assert_eq!(a["results"][0]["outcomes"][0]["step"], "c", "{a}");
    assert_eq!(a["results"][0]["outcomes"][0]["found"], 2, "{a}");
    let (_, u) = s.get("/v1/users/u1").await;
    assert_eq!(u["hunts"][0]["found"], json!(["a", "c"]), "{u}");
    s.stop().await.unwrap();

    // Started again (the log replayed, no snapshot): the same progress, and b completes.
    std::fs::remove_dir_all(dir.join("snapshots")).unwrap();
    let s = Server::start(
        &dir,
        Options {
            hunts: None,
            ..opts()
        },
    )
    .await;
    let (_, u) = s.get("/v1/users/u1").await;
    assert_eq!(u["hunts"][0]["found"], json!(["a", "c"]), "{u}");
    let (st, a) = s
        .post(ev("3", "u1", "page_view", json!({"url": "/b"})))
        .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(kinds(&a, 0), ["step_found", "hunt_completed"], "{a}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_follows_step_ids_when_steps_are_reordered_or_removed() {
    let (_d, dir) = tempdir();
    let s = Server::start(&dir, Options::default()).await;
    // ann finds shoes; bo finds shoes and blog.
    let eggs = three_eggs("ann");
    s.post(eggs[0].clone()).await;
    let eggs = three_eggs("bo");
    s.post(json!([eggs[0].clone(), eggs[1].clone()])).await;

    // [shoes, blog, search] becomes [search, blog]: shoes is removed.
    let v2 = EGGS.replace(
        "      - { id: shoes, on: product_view, when: 'event.data.category == \"shoes\"', clue: Look at shoes. }\n",
        "",
    );
    let v2 = v2.replace(
        "      - { id: blog, on: page_view, when: 'event.data.url == \"/blog\"', clue: Read the blog. }\n      - { id: search, on: search, when: 'event.data.query.contains(\"egg\")', clue: Search for eggs. }",
        "      - { id: search, on: search, when: 'event.data.query.contains(\"egg\")', clue: Search for eggs. }\n      - { id: blog, on: page_view, when: 'event.data.url == \"/blog\"', clue: Read the blog. }",
    );
    assert!(
        !v2.contains("id: shoes") && v2.find("id: search") < v2.find("id: blog"),
        "{v2}"
    );
    let (st, r) = s.put_config(&v2).await;
    assert_eq!(st, 200, "{r}");

    // ann's find of shoes is not a find of search: the blog does not complete the hunt.
    let (_, u) = s.get("/v1/users/ann").await;
    assert_eq!(u["hunts"][0]["found"], json!([]), "{u}");
    let (_, a) = s
        .post(ev("ann-b", "ann", "page_view", json!({"url": "/blog"})))
        .await;
    assert_eq!(kinds(&a, 0), ["step_found"], "{a}");
    assert_eq!(a["results"][0]["outcomes"][0]["step"], "blog", "{a}");
    assert_eq!(a["results"][0]["outcomes"][0]["found"], 1, "{a}");
    // bo keeps blog; searching completes the hunt.
    let (_, u) = s.get("/v1/users/bo").await;
    assert_eq!(u["hunts"][0]["found"], json!(["blog"]), "{u}");
    let (_, a) = s
        .post(ev("bo-s", "bo", "search", json!({"query": "egg"})))
        .await;
    assert_eq!(
        kinds(&a, 0),
        ["step_found", "hunt_completed", "reward_granted"],
        "{a}"
    );

    // A hunt removed from the file: the progress shows its steps by id, not by position.
    let (st, r) = s.put_config(&two_steps("")).await;
    assert_eq!(st, 200, "{r}");
    let (_, u) = s.get("/v1/users/bo").await;
    assert_eq!(u["hunts"][0]["hunt"], "eggs", "{u}");
    assert_eq!(u["hunts"][0]["found"], json!(["search", "blog"]), "{u}");
    s.stop().await.unwrap();

    // Started again from the snapshot the stop took: progress in the removed hunt keeps
    // its own step ids, and when the hunt comes back ann resumes where she was.
    let s = Server::start_again(&dir).await;
    let (_, u) = s.get("/v1/users/bo").await;
    assert_eq!(u["hunts"][0]["found"], json!(["search", "blog"]), "{u}");
    let (st, r) = s.put_config(&v2).await;
    assert_eq!(st, 200, "{r}");
    let (_, u) = s.get("/v1/users/ann").await;
    assert_eq!(u["hunts"][0]["found"], json!(["blog"]), "{u}");
    let (_, a) = s
        .post(ev("ann-s", "ann", "search", json!({"query": "egg"})))
        .await;
    assert_eq!(
        kinds(&a, 0),
        ["step_found", "hunt_completed", "reward_granted"],
        "{a}"
    );
    assert_eq!(a["results"][0]["outcomes"][2]["code"], "W-2", "{a}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_counts_the_customers_each_change_touches_and_switches_nothing() {
    let (_d, dir) = tempdir();
    let s = Server::start(&dir, Options::default()).await;
    // ann has shoes; bo has shoes and blog; cy completed the hunt (code W-1).
    let eggs = three_eggs("ann");
    s.post(eggs[0].clone()).await;
    let eggs = three_eggs("bo");
    s.post(json!([eggs[0].clone(), eggs[1].clone()])).await;
    s.post(json!(three_eggs("cy"))).await;

    // shoes removed, a step added, the pool grown.
    let v2 = EGGS
        .replace(
            "      - { id: shoes, on: product_view, when: 'event.data.category == \"shoes\"', clue: Look at shoes. }\n",
            "      - { id: cart, on: cart_add }\n",
        )
        .replace("codes: [W-1, W-2, W-3]", "codes: [W-1, W-2, W-3, W-4]");
    let (st, plan) = s.put_config_with(&v2, "dry_run=true").await;
    assert_eq!(st, 200, "{plan}");
    assert_eq!(plan["dry_run"], true, "{plan}");
    assert_eq!(plan["customers"], 3, "{plan}");
    let change = |kind: &str| {
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} in {plan}"))
    };
    let removed = change("step_removed");
    assert_eq!(
        (&removed["step"], &removed["customers"]),
        (&json!("shoes"), &json!(2)),
        "{plan}"
    );
    let added = change("step_added");
    assert_eq!(
        (&added["step"], &added["customers"]),
        (&json!("cart"), &json!(2)),
        "{plan}"
    );
    let pool = change("pool_changed");
    assert_eq!(pool["customers"], 1, "cy holds a code: {plan}");
    let summary = plan["summary"].to_string();
    assert!(
        summary.contains("step shoes removed from hunt eggs: 2 customers lose a find"),
        "{summary}"
    );
    assert!(
        summary.contains("step cart added to hunt eggs: 2 customers in progress now need it"),
        "{summary}"
    );
    // Nothing switched.
    let (_, c) = s.get("/v1/config").await;
    assert_eq!(c["version"], 1, "{c}");
    let (_, u) = s.get("/v1/users/ann").await;
    assert_eq!(u["hunts"][0]["found"], json!(["shoes"]), "{u}");

    // The same file for real: the answer lists the changes.
    let (st, r) = s.put_config(&v2).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["version"], 2, "{r}");
    assert!(r["changes"].as_array().is_some_and(|c| c.len() == 3), "{r}");
    // Again: identical to the version in force, so not recorded again.
    let (st, r) = s.put_config(&v2).await;
    assert_eq!(
        (st, &r["version"], &r["unchanged"]),
        (200, &json!(2), &json!(true)),
        "{r}"
    );
    let (_, c) = s.get("/v1/config").await;
    assert_eq!(c["version"], 2, "{c}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_would_take_back_granted_codes_is_refused() {
    let (_d, dir) = tempdir();
    let s = Server::start(&dir, Options::default()).await;
    s.post(json!(three_eggs("ann"))).await; // W-1
    s.post(json!(three_eggs("bo"))).await; // W-2
    for (codes, words) in [
        (
            "codes: [W-1]",
            "would hold 1 codes, but 2 are already granted",
        ),
        (
            "codes: [W-1, W-3, W-4]",
            "no longer holds 1 code(s) already granted (for example W-2)",
        ),
    ] {
        let v2 = EGGS.replace("codes: [W-1, W-2, W-3]", codes);
        for query in ["dry_run=true", ""] {
            let (st, e) = s.put_config_with(&v2, query).await;
            assert_eq!(st, 409, "{query} {codes}: {e}");
            assert_eq!(e["error"]["code"], "unsafe_change", "{e}");
            let msg = e["error"]["message"].as_str().unwrap();
            assert!(msg.contains("pool welcome") && msg.contains(words), "{msg}");
        }
    }
    let (_, c) = s.get("/v1/config").await;
    assert_eq!(c["version"], 1, "{c}");
    // The server goes on under version 1: the last code is granted.
    let (_, a) = s.post(json!(three_eggs("cy"))).await;
    assert_eq!(a["results"][2]["outcomes"][2]["code"], "W-3", "{a}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_own_test_cases_fail_is_refused_unless_told_to_skip_them() {
    let (_d, dir) = tempdir();
    let s = Server::start(&dir, Options::default()).await;
    let with_case = |expect: &str| {
        format!(
            "{EGGS}tests:\n  - name: shoes first\n    events:\n      - {{ user: t, type: product_view, at: '2026-11-27T10:00:00Z', data: {{ category: shoes }} }}\n    expect:\n      - \"{expect}\"\n"
        )
    };
    let (st, e) = s.put_config(&with_case("t found eggs/blog")).await;
    assert_eq!(st, 422, "{e}");
    assert_eq!(e["error"]["code"], "tests_failed", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shoes first"),
        "{e}"
    );
    let diff = e["error"]["details"]["failures"][0]["diff"].to_string();
    assert!(
        diff.contains("- t found eggs/blog") && diff.contains("+ t found eggs/shoes"),
        "{diff}"
    );
    let (_, c) = s.get("/v1/config").await;
    assert_eq!(c["version"], 1, "{c}");

    let (st, r) = s.put_config(&with_case("t found eggs/shoes")).await;
    assert_eq!((st, &r["version"]), (200, &json!(2)), "{r}");
    let (st, r) = s
        .put_config_with(&with_case("t found eggs/blog"), "skip_tests=true")
        .await;
    assert_eq!((st, &r["version"]), (200, &json!(3)), "{r}");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_with_a_file_that_would_take_back_granted_codes_is_refused() {
    let (_d, dir) = tempdir();
    let s = Server::start(&dir, Options::default()).await;
    s.post(json!(three_eggs("ann"))).await; // W-1
    s.stop().await.unwrap();
    let e = Server::try_start(
        &dir,
        Options {
            hunts: Some(EGGS.replace("codes: [W-1, W-2, W-3]", "codes: [W-2, W-3]")),
            ..Options::default()
        },
    )
    .await
    .err()
    .expect("the start is refused");
    assert!(
        e.contains("cannot be put in force safely") && e.contains("W-1"),
        "{e}"
    );
    // The data is untouched: it starts on the version it holds, ann's code intact.
    let s = Server::start_again(&dir).await;
    let (_, u) = s.get("/v1/users/ann").await;
    assert_eq!(u["rewards"][0]["code"], "W-1", "{u}");
    let (_, c) = s.get("/v1/config").await;
    assert_eq!(c["version"], 1, "{c}");
    s.stop().await.unwrap();
}
