//! Parsing, precedence, wildcards, IPv6 and mapped addresses, error
//! positions, and the store's all-or-nothing changes.

use std::net::IpAddr;

use super::compiled::{Compiled, PolicySpec, Preset};
use super::rule::{Rule, Target};
use super::store::Policies;
use super::PolicyError;

fn policy(preset: Preset, rules: &[&str]) -> Compiled {
    Compiled::new(PolicySpec {
        preset,
        rules: rules.iter().map(|s| s.to_string()).collect(),
    })
    .unwrap()
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn rules_parse_and_print_canonically() {
    for (text, shown) in [
        ("allow example.com", "allow example.com"),
        ("DENY  *.Example.COM.", "deny *.example.com"),
        ("deny 10.0.0.0/8", "deny 10.0.0.0/8"),
        ("deny 198.51.100.7", "deny 198.51.100.7/32"),
        ("deny 2001:db8::/32", "deny 2001:db8::/32"),
        ("deny [2001:db8::1]", "deny 2001:db8::1/128"),
        ("deny ::ffff:10.0.0.0/104", "deny 10.0.0.0/8"),
        ("deny port 25", "deny port 25"),
        ("allow port 8000-8100", "allow port 8000-8100"),
    ] {
        let r: Rule = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(r.to_string(), shown);
    }
}

#[test]
fn bad_rules_name_their_column() {
    for (text, column, needle) in [
        ("", 1, "empty"),
        ("permit example.com", 1, "permit"),
        ("allow", 6, "missing target"),
        ("deny port", 10, "port"),
        ("deny port 70000", 11, "70000"),
        ("deny port 90-80", 11, "backwards"),
        ("deny port 80 x", 14, "\"x\""),
        ("deny example.com other.com", 18, "other.com"),
        ("deny 10.0.0.1/8", 14, "host bits"),
        ("deny 10.0.0.0/33", 6, "10.0.0.0/33"),
        ("deny 300.1.2.3", 6, "not an IPv4"),
        ("deny a.*.example.com", 8, "'*'"),
        ("deny exa$mple.com", 9, "'$'"),
        ("allow a..b", 9, "label"),
        ("deny 2001:db8::zz/32", 6, "2001:db8::zz/32"),
    ] {
        let e = text.parse::<Rule>().unwrap_err();
        assert_eq!(e.column, column, "{text:?}: {e}");
        assert!(e.reason.contains(needle), "{text:?}: {e}");
    }
    let e = Compiled::new(PolicySpec {
        preset: Preset::Open,
        rules: vec![
            "deny a.com".into(),
            "deny b.com".into(),
            "deny c_com!".into(),
        ],
    })
    .unwrap_err();
    assert_eq!(e.index, 2);
    let msg = e.to_string();
    assert!(
        msg.contains("rule 3") && msg.contains("column 11") && msg.contains("c_com!"),
        "{msg}"
    );
}

#[test]
fn wildcards_match_below_not_the_name_itself() {
    let p = policy(Preset::Open, &["deny *.example.com"]);
    assert!(!p.decide(Some("a.example.com"), None, 443).allow);
    assert!(!p.decide(Some("a.b.example.com"), None, 443).allow);
    assert!(p.decide(Some("example.com"), None, 443).allow);
    assert!(p.decide(Some("notexample.com"), None, 443).allow);
    assert!(!p.decide_name("x.example.com").allow);
    assert!(p.decide_name("example.com").allow);
}

#[test]
fn deny_beats_allow_and_names_the_rule() {
    let p = policy(
        Preset::Open,
        &[
            "allow *.example.com",
            "deny bad.example.com",
            "deny port 25",
        ],
    );
    let v = p.decide(Some("bad.example.com"), ip("198.51.100.1"), 443);
    assert_eq!((v.allow, v.rule), (false, "deny bad.example.com"));
    let v = p.decide(Some("good.example.com"), ip("198.51.100.1"), 25);
    assert_eq!((v.allow, v.rule), (false, "deny port 25"));
    assert!(
        p.decide(Some("good.example.com"), ip("198.51.100.1"), 443)
            .allow
    );
}

#[test]
fn an_allowed_name_cannot_reach_a_denied_range() {
    let p = policy(Preset::Balanced, &["allow example.com"]);
    let v = p.decide(Some("example.com"), ip("169.254.169.254"), 80);
    assert!(!v.allow);
    assert!(v.rule.contains("metadata"), "{}", v.rule);
    let v = p.decide(Some("example.com"), ip("10.1.2.3"), 443);
    assert!(!v.allow && v.rule.contains("10.0.0.0/8"), "{}", v.rule);
    assert!(
        p.decide(Some("example.com"), ip("198.51.100.10"), 443)
            .allow
    );
    // An explicit CIDR allow opens part of a preset range, not a deny rule.
    let p = policy(Preset::Balanced, &["allow 10.9.0.0/16", "deny 10.9.9.9"]);
    assert!(p.decide(None, ip("10.9.1.1"), 80).allow);
    assert!(!p.decide(None, ip("10.9.9.9"), 80).allow);
    assert!(!p.decide(None, ip("10.8.1.1"), 80).allow);
}

#[test]
fn balanced_denies_the_sandbox_ranges_in_both_families() {
    let p = policy(Preset::Balanced, &[]);
    for a in [
        "10.0.0.1",
        "172.16.5.5",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.1.1",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "fd12::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ] {
        assert!(!p.decide(None, ip(a), 80).allow, "{a}");
    }
    for a in ["198.51.100.10", "2001:db8:2::10", "8.8.8.8"] {
        assert!(p.decide(None, ip(a), 80).allow, "{a}");
    }
    let v = p.decide(None, ip("fd00:ec2::254"), 80);
    assert!(v.rule.contains("metadata"), "{}", v.rule);
}

#[test]
fn ipv4_mapped_ipv6_cannot_bypass_an_ipv4_rule() {
    let p = policy(
        Preset::Open,
        &["deny 198.51.100.0/24", "deny ::ffff:203.0.113.5"],
    );
    assert!(!p.decide(None, ip("::ffff:198.51.100.10"), 80).allow);
    assert!(!p.decide(None, ip("203.0.113.5"), 80).allow);
    assert!(p.decide(None, ip("2001:db8::198:51:100:10"), 80).allow);
    let p = policy(Preset::Open, &["deny 2001:db8::/32"]);
    assert!(!p.decide(None, ip("2001:db8:2::10"), 443).allow);
    assert!(p.decide(None, ip("2001:db9::1"), 443).allow);
}

#[test]
fn locked_allows_only_the_allow_list() {
    let p = policy(
        Preset::Locked,
        &[
            "allow api.example.com",
            "allow 198.51.100.0/24",
            "allow port 8443",
        ],
    );
    assert!(
        p.decide(Some("api.example.com"), ip("203.0.113.9"), 443)
            .allow
    );
    assert!(p.decide(None, ip("198.51.100.9"), 80).allow);
    assert!(p.decide(None, ip("203.0.113.9"), 8443).allow);
    let v = p.decide(Some("other.example.com"), ip("203.0.113.9"), 443);
    assert_eq!(
        (v.allow, v.rule),
        (false, "preset locked: not on the allow list")
    );
    assert!(p.decide_name("api.example.com").allow);
    assert!(!p.decide_name("other.example.com").allow);
    // Open and balanced refuse names only when a deny rule says so.
    assert!(
        policy(Preset::Balanced, &[])
            .decide_name("anything.test")
            .allow
    );
}

#[test]
fn nat_policy_keeps_cidrs_and_ports_only() {
    let p = policy(
        Preset::Balanced,
        &["deny example.com", "deny 198.51.100.11", "allow port 443"],
    );
    let n = p.nat_policy();
    assert_eq!(n.deny.len(), 1);
    assert_eq!(n.allow.len(), 1);
    assert!(!n.locked);
    assert!(n.preset_deny.len() > 10);
}

#[test]
fn many_rules_compile_and_decide() {
    let rules: Vec<String> = (0..100_000u32)
        .map(|i| match i % 3 {
            0 => format!("deny host{i}.example.com"),
            1 => format!("deny 10.{}.{}.0/24", (i >> 8) & 255, i & 255),
            _ => format!("deny 2001:db8:{:x}::/48", i & 0xffff),
        })
        .collect();
    let p = Compiled::new(PolicySpec {
        preset: Preset::Open,
        rules,
    })
    .unwrap();
    assert!(!p.decide(Some("host3.example.com"), None, 443).allow);
    assert!(p.decide(Some("host4.example.com"), None, 443).allow);
    assert!(!p.decide(None, ip("10.0.1.7"), 443).allow);
    assert!(p.decide(None, ip("11.0.1.7"), 443).allow);
}

#[test]
fn targets_of_each_kind() {
    let r: Rule = "allow *.a.test".parse().unwrap();
    assert_eq!(
        r.target,
        Target::Domain {
            name: "a.test".into(),
            wildcard: true
        }
    );
}

#[tokio::test]
async fn the_store_changes_all_or_nothing_and_persists() {
    let dir = std::env::temp_dir().join(format!("policy-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = Policies::open(&dir).unwrap();
    let v = p
        .set(
            "web",
            PolicySpec {
                preset: Preset::Balanced,
                rules: vec!["deny bad.test".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(v.spec.rules, vec!["deny bad.test"]);
    // A bad rule among good ones changes nothing.
    let e = p
        .add("web", &["deny ok.test".into(), "deny b@d".into()])
        .await
        .unwrap_err();
    assert!(matches!(e, PolicyError::Rule(ref l) if l.index == 1), "{e}");
    assert_eq!(p.view("web").unwrap().spec.rules, vec!["deny bad.test"]);
    let e = p
        .remove("web", &["deny nothere.test".into()])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nothere.test"), "{e}");
    p.add("web", &["deny  ok.test.".into(), "deny ok.test".into()])
        .await
        .unwrap();
    assert_eq!(
        p.view("web").unwrap().spec.rules,
        vec!["deny bad.test", "deny ok.test"]
    );
    p.remove("web", &["DENY bad.test".into()]).await.unwrap();
    assert!(p.set("../x", PolicySpec::default()).await.is_err());
    drop(p);
    let again = Policies::open(&dir).unwrap();
    let v = again.view("web").unwrap();
    assert_eq!(
        (v.spec.preset, v.spec.rules),
        (Preset::Balanced, vec!["deny ok.test".to_string()])
    );
    // Back to the default: the network's entry goes away.
    again.set("web", PolicySpec::default()).await.unwrap();
    assert!(again.get("web").is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn clients_are_found_by_subnet() {
    let p = Policies::in_memory();
    p.register_network(
        "web",
        &[
            "10.231.0.0/24".parse().unwrap(),
            "fd00:e9::/64".parse().unwrap(),
        ],
    );
    assert_eq!(
        p.network_of("10.231.0.2".parse().unwrap()).as_deref(),
        Some("web")
    );
    assert_eq!(
        p.network_of("::ffff:10.231.0.2".parse().unwrap())
            .as_deref(),
        Some("web")
    );
    assert_eq!(
        p.network_of("fd00:e9::2".parse().unwrap()).as_deref(),
        Some("web")
    );
    assert_eq!(p.network_of("10.232.0.2".parse().unwrap()), None);
    p.unregister_network("web");
    assert_eq!(p.network_of("10.231.0.2".parse().unwrap()), None);
}
