//! Unit tests of the YAML step.

use super::*;

fn json(text: &str) -> String {
    to_json(text.as_bytes()).unwrap_or_else(|err| panic!("{text:?}: {err}"))
}

#[test]
fn yaml_1_1_scalars_resolve_as_go_yaml_v2_resolves_them() {
    for (yaml, expected) in [
        ("a: yes", r#"{"a":true}"#),
        ("a: Off", r#"{"a":false}"#),
        ("a: y", r#"{"a":true}"#),
        ("a: 'yes'", r#"{"a":"yes"}"#),
        ("a: 0100", r#"{"a":64}"#),
        ("a: 0o100", r#"{"a":64}"#),
        ("a: 0x40", r#"{"a":64}"#),
        ("a: 0b101", r#"{"a":5}"#),
        ("a: -0b101", r#"{"a":-5}"#),
        ("a: 1_000", r#"{"a":1000}"#),
        ("a: +64", r#"{"a":64}"#),
        ("a: 08", r#"{"a":8}"#),
        ("a: 64.0", r#"{"a":64}"#),
        ("a: 1e2", r#"{"a":100}"#),
        ("a: 6.4e1", r#"{"a":64}"#),
        ("a: 1e21", r#"{"a":1e21}"#),
        ("a: .5", r#"{"a":0.5}"#),
        ("a: 1e400", r#"{"a":"1e400"}"#),
        ("a: 9223372036854775808", r#"{"a":9223372036854775808}"#),
        ("a: 2001-12-14", r#"{"a":"2001-12-14"}"#),
        ("a: ~", r#"{"a":null}"#),
        ("a:", r#"{"a":null}"#),
        ("a: !!str 64", r#"{"a":"64"}"#),
        ("a: !!float 64", r#"{"a":64}"#),
        ("a: !!binary aGVsbG8=", r#"{"a":"hello"}"#),
        ("a: +inf", r#"{"a":"+inf"}"#),
        ("a: 10.0.0.0/8", r#"{"a":"10.0.0.0/8"}"#),
    ] {
        assert_eq!(json(yaml), expected, "{yaml}");
    }
}

#[test]
fn nan_and_infinities_cannot_become_json() {
    for yaml in ["a: .nan", "a: -.Inf", "a: [.inf]", "unknown: {x: .NaN}"] {
        assert!(
            to_json(yaml.as_bytes())
                .unwrap_err()
                .contains("unsupported value"),
            "{yaml}"
        );
    }
}

#[test]
fn keys_are_a_go_map_sorted_on_output() {
    assert_eq!(json("b: 1\na: 2\nb: 3"), r#"{"a":2,"b":3}"#);
    assert_eq!(json("yes: 1\n1: 2"), r#"{"1":2,"true":1}"#);
    assert!(to_json("~: 1".as_bytes()).is_err());
    assert!(to_json("18446744073709551615: 1".as_bytes()).is_err());
    assert!(to_json("[a]: 1".as_bytes()).is_err());
}

#[test]
fn merge_keys_follow_go_yaml_precedence() {
    let base = "base: &b {p: 1, q: 1}\n";
    assert_eq!(
        json(&format!("{base}m:\n  p: 2\n  <<: *b\n")),
        r#"{"base":{"p":1,"q":1},"m":{"p":1,"q":1}}"#
    );
    assert_eq!(
        json(&format!("{base}m:\n  <<: *b\n  p: 2\n")),
        r#"{"base":{"p":1,"q":1},"m":{"p":2,"q":1}}"#
    );
    assert_eq!(
        json("a: &a {p: 1}\nb: &b {p: 2, q: 2}\nm:\n  <<: [*a, *b]\n"),
        r#"{"a":{"p":1},"b":{"p":2,"q":2},"m":{"p":1,"q":2}}"#
    );
    assert!(to_json("m:\n  <<: 1\n".as_bytes()).is_err());
    assert_eq!(json("m:\n  '<<': 1\n"), r#"{"m":{"<<":1}}"#);
}

#[test]
fn only_the_first_document_counts() {
    assert_eq!(json("a: 1\n---\na: 2\n"), r#"{"a":1}"#);
    assert_eq!(json("a: 1\n...\n"), r#"{"a":1}"#);
    assert_eq!(json("a: 1\n---\n"), r#"{"a":1}"#);
    assert_eq!(json(""), "null");
    assert_eq!(json("# only a comment\n"), "null");
}

#[test]
fn inputs_the_fuzzer_found_are_errors_not_panics() {
    // A backslash at the very end of a double-quoted scalar, and a block
    // scalar ending without a line break: both made libyaml-safer panic,
    // the parser used before libyaml itself.
    assert!(to_json(b"\"OMN{\\").unwrap_err().contains("unknown escape"));
    assert!(to_json(b"a: \"x\\").is_err());
    assert_eq!(json("| \n  `"), "\"`\"");
}

#[test]
fn only_yaml_1_1_documents_are_read() {
    assert_eq!(json("%YAML 1.1\n---\na: 1\n"), r#"{"a":1}"#);
    assert!(
        to_json("%YAML 1.2\n---\na: 1\n".as_bytes())
            .unwrap_err()
            .contains("incompatible")
    );
}

#[test]
fn aliases_expand_and_bombs_are_refused() {
    assert_eq!(json("a: &x [1]\nb: *x\n"), r#"{"a":[1],"b":[1]}"#);
    let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x]\n");
    for (name, previous) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        bomb.push_str(&format!(
            "{name}: &{name} [{}]\n",
            vec![format!("*{previous}"); 9].join(",")
        ));
    }
    assert_eq!(
        to_json(bomb.as_bytes()).unwrap_err(),
        "document contains excessive aliasing"
    );
    assert!(to_json("a: *nowhere\n".as_bytes()).is_err());
}

#[test]
fn nesting_is_bounded_at_go_yamls_depth_not_lower() {
    let deep_ok = format!("a: {}{}", "[".repeat(5000), "]".repeat(5000));
    assert!(to_json(deep_ok.as_bytes()).is_ok());
    let too_deep = format!(
        "a: {}{}",
        "[".repeat(MAX_DEPTH + 1),
        "]".repeat(MAX_DEPTH + 1)
    );
    assert!(
        to_json(too_deep.as_bytes())
            .unwrap_err()
            .contains("max depth")
    );
    // Indentation and brackets in comments or strings are not nesting.
    assert!(
        to_json(
            format!(
                "{}a: [1]\n# {}\nb: \"{}\"\n",
                " ".repeat(70),
                "[".repeat(40),
                "[".repeat(40)
            )
            .as_bytes()
        )
        .is_ok()
    );
}
