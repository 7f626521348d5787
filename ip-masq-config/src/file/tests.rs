//! Unit tests of reading the file.

use std::collections::BTreeSet;

use super::cidr::validate_cidr;
use super::*;

const V4_ONLY: ParseOptions = ParseOptions {
    enable_ipv6: false,
    nomasq_all_reserved_ranges: false,
};
const WITH_V6: ParseOptions = ParseOptions {
    enable_ipv6: true,
    nomasq_all_reserved_ranges: false,
};

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn problems(result: Result<ParsedConfig, ConfigError>) -> Vec<Problem> {
    match result {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected invalid values, got {other:?}"),
    }
}

fn config(text: &str) -> MasqConfig {
    parse(text.as_bytes(), V4_ONLY)
        .unwrap_or_else(|err| panic!("{text:?}: {err}"))
        .config
}
#[test]
fn empty_and_comment_only_files_give_defaults() {
    for text in ["", "   \n", "# nothing here\n", "null", "~"] {
        let parsed = parse(text.as_bytes(), V4_ONLY).unwrap();
        assert_eq!(parsed.config, MasqConfig::defaults(V4_ONLY), "{text:?}");
    }
}

#[test]
fn defaults_are_upstreams() {
    let config = MasqConfig::defaults(V4_ONLY);
    assert_eq!(config.non_masquerade_cidrs, nets(&RFC1918_CIDRS));
    assert!(!config.masq_link_local);
    assert!(!config.masq_link_local_ipv6);
    assert_eq!(config.resync_interval, Duration::from_secs(60));
    assert_eq!(config.cidr_limit, None);
}

#[test]
fn reserved_ranges_flag_extends_defaults_only() {
    let options = ParseOptions {
        nomasq_all_reserved_ranges: true,
        ..V4_ONLY
    };
    let config = parse(b"", options).unwrap().config;
    assert_eq!(config.non_masquerade_cidrs.len(), 11);
    assert!(
        config
            .non_masquerade_cidrs
            .contains(&"240.0.0.0/4".parse().unwrap())
    );
    let config = parse(b"nonMasqueradeCIDRs: [10.0.0.0/8]", options)
        .unwrap()
        .config;
    assert_eq!(config.non_masquerade_cidrs, nets(&["10.0.0.0/8"]));
}

#[test]
fn yaml_and_json_parse_the_same() {
    let yaml = "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - 198.51.100.0/24\nmasqLinkLocal: true\nresyncInterval: 30s\n";
    let json = "{\n\t\"nonMasqueradeCIDRs\": [\"10.0.0.0/8\", \"198.51.100.0/24\"],\n\t\"masqLinkLocal\": true,\n\t\"resyncInterval\": \"30s\"\n}";
    let from_yaml = parse(yaml.as_bytes(), V4_ONLY).unwrap();
    let from_json = parse(json.as_bytes(), V4_ONLY).unwrap();
    assert_eq!(from_yaml, from_json);
    assert_eq!(
        from_yaml.config.non_masquerade_cidrs,
        nets(&["10.0.0.0/8", "198.51.100.0/24"])
    );
    assert!(from_yaml.config.masq_link_local);
    assert_eq!(from_yaml.config.resync_interval, Duration::from_secs(30));
}

#[test]
fn present_key_replaces_only_its_default() {
    let config = parse(b"nonMasqueradeCIDRs: []", V4_ONLY).unwrap().config;
    assert!(config.non_masquerade_cidrs.is_empty());
    assert!(!config.non_masquerade_cidrs_defaulted);
    assert!(!config.masq_link_local);
    let config = parse(b"masqLinkLocal: true", V4_ONLY).unwrap().config;
    assert_eq!(config.non_masquerade_cidrs, nets(&RFC1918_CIDRS));
    assert!(config.non_masquerade_cidrs_defaulted);
    assert!(config.masq_link_local);
}

#[test]
fn null_list_means_empty_list() {
    let config = parse(b"nonMasqueradeCIDRs: null", V4_ONLY).unwrap().config;
    assert!(config.non_masquerade_cidrs.is_empty());
}

#[test]
fn keys_match_case_insensitively() {
    let parsed = parse(
        b"nonmasqueradecidrs: [192.168.0.0/16]\nMASQLINKLOCAL: true\nResyncInterval: 5s",
        V4_ONLY,
    )
    .unwrap();
    assert_eq!(
        parsed.config.non_masquerade_cidrs,
        nets(&["192.168.0.0/16"])
    );
    assert!(parsed.config.masq_link_local);
    assert_eq!(parsed.config.resync_interval, Duration::from_secs(5));
    assert!(parsed.warnings.is_empty());
}

#[test]
fn unknown_keys_warn_with_a_suggestion() {
    let parsed = parse(b"nonMasqueradeCidr: [10.0.0.0/8]\nfoo: 1", V4_ONLY).unwrap();
    assert_eq!(parsed.config, MasqConfig::defaults(V4_ONLY));
    assert_eq!(parsed.warnings.len(), 2);
    // YAML keys reach the JSON step sorted, so "foo" comes first.
    assert!(parsed.warnings[1].contains("\"nonMasqueradeCidr\""));
    assert!(parsed.warnings[1].contains("did you mean \"nonMasqueradeCIDRs\""));
    assert!(parsed.warnings[0].contains("\"foo\""));
    assert!(!parsed.warnings[0].contains("did you mean"));
}

#[test]
fn every_bad_cidr_is_reported() {
    let found = problems(parse(
        b"nonMasqueradeCIDRs: [10.0.0.1/8, not-a-cidr, 10.0.0.0/33, 192.168.0.0/16, 7]",
        V4_ONLY,
    ));
    let values: Vec<_> = found.iter().map(|p| p.value.clone().unwrap()).collect();
    assert_eq!(
        values,
        [
            "7",
            "\"10.0.0.1/8\"",
            "\"not-a-cidr\"",
            "\"10.0.0.0/33\"",
            "\"\""
        ]
    );
    assert!(found[1].reason.contains("did you mean 10.0.0.0/8"));
    let message = ConfigError::Invalid(found).to_string();
    assert!(message.starts_with("5 invalid value(s)"), "{message}");
    assert!(message.contains("10.0.0.1/8") && message.contains("not-a-cidr"));
}

#[test]
fn duplicates_are_merged() {
    let config = parse(
        b"nonMasqueradeCIDRs: [10.0.0.0/8, 10.0.0.0/8, 172.16.0.0/12]",
        V4_ONLY,
    )
    .unwrap()
    .config;
    assert_eq!(
        config.non_masquerade_cidrs,
        nets(&["10.0.0.0/8", "172.16.0.0/12"])
    );
}

#[test]
fn ipv6_needs_the_flag() {
    let text = b"nonMasqueradeCIDRs: [10.0.0.0/8, 2001:db8::/32]";
    let found = problems(parse(text, V4_ONLY));
    assert_eq!(found.len(), 1);
    assert!(found[0].reason.contains("--enable-ipv6"));
    let config = parse(text, WITH_V6).unwrap().config;
    assert_eq!(
        config.non_masquerade_cidrs,
        nets(&["10.0.0.0/8", "2001:db8::/32"])
    );
}

#[test]
fn resync_interval_rules() {
    let found = problems(parse(b"resyncInterval: 60", V4_ONLY));
    assert_eq!(found[0].key, "resyncInterval");
    let found = problems(parse(b"resyncInterval: \"60\"", V4_ONLY));
    assert!(found[0].reason.contains("missing unit"));
    let parsed = parse(b"resyncInterval: 100ms", V4_ONLY).unwrap();
    assert_eq!(parsed.config.resync_interval, MIN_RESYNC_INTERVAL);
    assert_eq!(parsed.warnings.len(), 1);
    let parsed = parse(b"resyncInterval: 1m30s", V4_ONLY).unwrap();
    assert_eq!(parsed.config.resync_interval, Duration::from_secs(90));
}

#[test]
fn cidr_limit_is_enforced_only_when_set() {
    let many: Vec<String> = (0..100).map(|i| format!("10.{i}.0.0/16")).collect();
    let text = format!("nonMasqueradeCIDRs: [{}]", many.join(", "));
    assert_eq!(
        parse(text.as_bytes(), V4_ONLY)
            .unwrap()
            .config
            .non_masquerade_cidrs
            .len(),
        100
    );
    let limited = format!("{text}\ncidrLimit: 64");
    let found = problems(parse(limited.as_bytes(), V4_ONLY));
    assert!(found[0].reason.contains("exceed cidrLimit 64"));
    let raised = format!("{text}\ncidrLimit: 100");
    assert!(parse(raised.as_bytes(), V4_ONLY).is_ok());
    // A negative limit is a valid number upstream; no list fits under it.
    let found = problems(parse(b"cidrLimit: -1", V4_ONLY));
    assert_eq!(found[0].key, "cidrLimit");
    assert!(parse(b"cidrLimit: 0\nnonMasqueradeCIDRs: []", V4_ONLY).is_ok());
}

#[test]
fn masquerade_exceptions() {
    let config = parse(
        b"nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.200.0.0/16]",
        V4_ONLY,
    )
    .unwrap()
    .config;
    assert_eq!(config.masquerade_cidrs, nets(&["10.200.0.0/16"]));
    let found = problems(parse(
        b"nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.0.0.0/8, 10.1.0.1/16]",
        V4_ONLY,
    ));
    assert_eq!(found.len(), 2);
    assert!(found.iter().any(|p| p.reason.contains("cannot be both")));
}

#[test]
fn wrong_types_are_reported_together() {
    let found = problems(parse(
        b"nonMasqueradeCIDRs: 10.0.0.0/8\nmasqLinkLocal: yes-please\ncidrLimit: many",
        V4_ONLY,
    ));
    let keys: BTreeSet<_> = found.iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["nonMasqueradeCIDRs", "masqLinkLocal", "cidrLimit"])
    );
}

#[test]
fn broken_documents_are_rejected() {
    assert!(matches!(
        parse(b"nonMasqueradeCIDRs: [10.0.0.0/8", V4_ONLY),
        Err(ConfigError::Syntax { format: "YAML", .. })
    ));
    assert!(matches!(
        parse(b"- a\n- b\n", V4_ONLY),
        Err(ConfigError::NotAMapping { found: "array" })
    ));
    assert!(matches!(
        parse(b"\xff\xff", V4_ONLY),
        Err(ConfigError::NotUtf8 { offset: 0 })
    ));
    let huge = vec![b'#'; MAX_CONFIG_BYTES + 1];
    assert!(matches!(
        parse(&huge, V4_ONLY),
        Err(ConfigError::TooLarge { .. })
    ));
}

#[test]
fn yaml_1_1_values_fill_fields_as_upstream() {
    assert!(config("masqLinkLocal: yes").masq_link_local);
    assert!(config("masqLinkLocal: On").masq_link_local);
    assert_eq!(config("cidrLimit: 0100").cidr_limit, Some(64));
    assert_eq!(config("cidrLimit: 1_000").cidr_limit, Some(1000));
    assert_eq!(config("cidrLimit: 64.0").cidr_limit, Some(64));
    assert_eq!(config("cidrLimit: 1e2").cidr_limit, Some(100));
    let found = problems(parse(b"masqLinkLocal: \"yes\"", V4_ONLY));
    // The value is shown once, as JSON: no doubled quotes.
    assert_eq!(
        found[0].to_string(),
        "masqLinkLocal: \"yes\": expected true or false, found a string"
    );
    for text in ["cidrLimit: .nan", "masqLinkLocal: .inf", "foo: -.Inf"] {
        assert!(
            matches!(
                parse(text.as_bytes(), V4_ONLY),
                Err(ConfigError::Syntax { .. })
            ),
            "{text}"
        );
    }
}

#[test]
fn json_files_are_strict_and_number_text_matters() {
    assert_eq!(config(r#"{"cidrLimit": 64}"#).cidr_limit, Some(64));
    assert_eq!(
        config(r#"{"cidrLimit": -0, "nonMasqueradeCIDRs": []}"#).cidr_limit,
        Some(0)
    );
    for text in [r#"{"cidrLimit": 64.0}"#, r#"{"cidrLimit": 1e2}"#] {
        assert!(parse(text.as_bytes(), V4_ONLY).is_err(), "{text}");
    }
    for text in [
        "{\"masqLinkLocal\": true,}",
        "{'masqLinkLocal': true}",
        "{\"masqLinkLocal\": true} # c",
    ] {
        assert!(
            matches!(
                parse(text.as_bytes(), V4_ONLY),
                Err(ConfigError::Syntax { format: "JSON", .. })
            ),
            "{text}"
        );
    }
    // A byte-order mark is not white space: the file is YAML then.
    assert!(config("\u{feff}{\"masqLinkLocal\": true,}").masq_link_local);
}

#[test]
fn duplicate_keys_last_wins_but_an_earlier_invalid_value_still_fails() {
    assert!(!config("masqLinkLocal: true\nmasqLinkLocal: false").masq_link_local);
    // YAML: a Go map, so an earlier duplicate is gone before JSON sees it.
    assert!(config("masqLinkLocal: nope\nmasqLinkLocal: true").masq_link_local);
    // JSON: every entry is decoded.
    assert!(
        parse(
            br#"{"masqLinkLocal": "nope", "masqLinkLocal": true}"#,
            V4_ONLY
        )
        .is_err()
    );
    assert!(config(r#"{"masqLinkLocal": false, "MASQLINKLOCAL": true}"#).masq_link_local);
    // YAML keys come out sorted: "MasqLinkLocal" < "masqLinkLocal".
    assert!(config("masqLinkLocal: true\nMasqLinkLocal: false").masq_link_local);
}

#[test]
fn null_items_keep_what_the_slot_held() {
    assert_eq!(
        config("nonMasqueradeCIDRs: [null]").non_masquerade_cidrs,
        nets(&["10.0.0.0/8"])
    );
    assert_eq!(
        config("nonMasqueradeCIDRs: [192.168.0.0/16, null, 10.0.0.0/8]").non_masquerade_cidrs,
        nets(&["192.168.0.0/16", "172.16.0.0/12", "10.0.0.0/8"])
    );
    assert!(parse(b"nonMasqueradeCIDRs: [null, null, null, null]", V4_ONLY).is_err());
}

#[test]
fn cidrs_parse_as_go_parses_them() {
    for bad in [
        "010.0.0.0/8",
        "10.01.0.0/16",
        "10.0.0.0/+8",
        "10.0.0.0/33",
        "fe80::%eth0/64",
        "10.0.0.0",
    ] {
        assert!(validate_cidr(bad, WITH_V6).is_err(), "{bad}");
    }
    assert_eq!(
        validate_cidr("10.0.0.0/08", V4_ONLY),
        Ok("10.0.0.0/8".parse().unwrap())
    );
    assert_eq!(
        validate_cidr("FD00::/8", WITH_V6),
        Ok("fd00::/8".parse().unwrap())
    );
    assert!(
        validate_cidr("::ffff:10.0.0.0/104", WITH_V6)
            .unwrap_err()
            .contains("IPv4-mapped")
    );
}

#[test]
fn resync_intervals_below_a_second_or_negative_are_raised() {
    for text in [
        "resyncInterval: 100ms",
        "resyncInterval: -1s",
        "resyncInterval: -0s",
    ] {
        let parsed = parse(text.as_bytes(), V4_ONLY).unwrap();
        assert_eq!(parsed.config.resync_interval, MIN_RESYNC_INTERVAL, "{text}");
        assert_eq!(parsed.warnings.len(), 1, "{text}");
    }
    assert_eq!(
        config("resyncInterval: 0.999999999999999999999999999999m").resync_interval,
        Duration::from_nanos(59_999_999_999)
    );
    assert!(parse(b"resyncInterval: null", V4_ONLY).is_err());
    assert!(parse(b"resyncInterval:", V4_ONLY).is_err());
}

#[test]
fn deep_but_valid_nesting_is_read() {
    assert!(
        parse(
            format!("{}nonMasqueradeCIDRs: [10.0.0.0/8]\n", " ".repeat(70)).as_bytes(),
            V4_ONLY
        )
        .is_ok()
    );
    let deep = format!("unknown: {}{}\n", "[".repeat(50), "]".repeat(50));
    assert!(parse(deep.as_bytes(), V4_ONLY).is_ok());
    let flow = format!("{}{}", "{\"a\": [".repeat(4000), "]}".repeat(4000));
    assert!(parse(flow.as_bytes(), V4_ONLY).is_ok());
}

#[test]
fn alias_bombs_are_rejected_quickly() {
    let bomb = "a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n\
                b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n\
                c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n\
                d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n\
                e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n\
                f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n\
                g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n\
                h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n\
                i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    let error = parse(bomb.as_bytes(), V4_ONLY).unwrap_err();
    assert!(error.to_string().contains("excessive aliasing"), "{error}");
}
