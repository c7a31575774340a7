//! `conductor-netd policy ...` against a daemon with its in-memory kernel:
//! changes, refusals with the rule's position (exit 3, nothing changed),
//! a rule that is not there (exit 4), and the policy kept across a crash.

use conductor_tests::daemon::*;

#[test]
fn policies_are_set_refused_and_kept() {
    let mut d = Daemon::start("policy", None);
    let v = d.json(&[
        "policy",
        "set",
        "web",
        "--preset",
        "balanced",
        "deny *.evil.test",
        "allow port 443",
    ]);
    assert_eq!(v["preset"], "balanced");
    assert_eq!(v["rules"][0], "deny *.evil.test");
    d.fails(
        &["policy", "add", "web", "deny ok.test", "deny 10.0.0.1/8"],
        INVALID,
        "column 14",
    );
    d.fails(
        &["policy", "set", "web", "--preset", "closed"],
        INVALID,
        "closed",
    );
    d.fails(
        &["policy", "rm", "web", "deny not.there"],
        NOT_FOUND,
        "not.there",
    );
    d.fails(&["policy", "show", "bad/name"], INVALID, "bad/name");
    let shown = d.json(&["policy", "show", "web"]);
    assert_eq!(shown["rules"].as_array().unwrap().len(), 2, "{shown}");
    d.json(&["policy", "add", "web", "deny 203.0.113.0/24"]);
    let stats = d.ok(&["policy", "stats", "web"]);
    assert!(stats.contains("denied 0"), "{stats}");
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.state.join("policies.json")).unwrap()).unwrap();
    assert_eq!(file["networks"]["web"]["rules"][2], "deny 203.0.113.0/24");

    d.kill9();
    d.spawn(None);
    let shown = d.json(&["policy", "show", "web"]);
    assert_eq!(shown["rules"].as_array().unwrap().len(), 3, "{shown}");
    d.json(&["policy", "rm", "web", "deny   *.EVIL.test"]);
    let all = d.json(&["policy", "show"]);
    assert_eq!(all[0]["rules"].as_array().unwrap().len(), 2, "{all}");
    let reset = d.json(&["policy", "reset", "web"]);
    assert_eq!(reset["preset"], "open");
}
