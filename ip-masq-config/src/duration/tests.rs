//! Go's own tables for `time.ParseDuration` and `Duration.String()`, as data, and the cases
//! that broke the old parser.

use super::*;

/// What Go's `time.ParseDuration` returns for an input: nanoseconds, or
/// the full error message.
#[derive(Clone, Copy)]
enum Go {
    Nanos(i64),
    Error(&'static str),
}
use Go::{Error, Nanos};

const NS: i64 = 1;
const US: i64 = 1_000;
const MS: i64 = 1_000_000;
const S: i64 = 1_000_000_000;
const M: i64 = 60 * S;
const H: i64 = 60 * M;

fn check(cases: &[(&str, Go)]) {
    for &(text, want) in cases {
        let got = parse_go_duration_signed(text)
            .map(GoDuration::as_nanos)
            .map_err(|err| err.to_string());
        let want = match want {
            Nanos(nanos) => Ok(nanos),
            Error(message) => Err(message.to_owned()),
        };
        assert_eq!(got, want, "input {text:?}");
    }
}

/// Go's own `parseDurationTests` (src/time/time_test.go), as data.
#[test]
fn go_parse_duration_tests() {
    check(&[
        // simple
        ("0", Nanos(0)),
        ("5s", Nanos(5 * S)),
        ("30s", Nanos(30 * S)),
        ("1478s", Nanos(1478 * S)),
        // sign
        ("-5s", Nanos(-5 * S)),
        ("+5s", Nanos(5 * S)),
        ("-0", Nanos(0)),
        ("+0", Nanos(0)),
        // decimal
        ("5.0s", Nanos(5 * S)),
        ("5.6s", Nanos(5 * S + 600 * MS)),
        ("5.s", Nanos(5 * S)),
        (".5s", Nanos(500 * MS)),
        ("1.0s", Nanos(S)),
        ("1.00s", Nanos(S)),
        ("1.004s", Nanos(S + 4 * MS)),
        ("1.0040s", Nanos(S + 4 * MS)),
        ("100.00100s", Nanos(100 * S + MS)),
        // different units
        ("10ns", Nanos(10 * NS)),
        ("11us", Nanos(11 * US)),
        ("12µs", Nanos(12 * US)), // U+00B5
        ("12μs", Nanos(12 * US)), // U+03BC
        ("13ms", Nanos(13 * MS)),
        ("14s", Nanos(14 * S)),
        ("15m", Nanos(15 * M)),
        ("16h", Nanos(16 * H)),
        // composite durations
        ("3h30m", Nanos(3 * H + 30 * M)),
        ("10.5s4m", Nanos(4 * M + 10 * S + 500 * MS)),
        ("-2m3.4s", Nanos(-(2 * M + 3 * S + 400 * MS))),
        (
            "1h2m3s4ms5us6ns",
            Nanos(H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS),
        ),
        ("39h9m14.425s", Nanos(39 * H + 9 * M + 14 * S + 425 * MS)),
        // large value
        ("52763797000ns", Nanos(52_763_797_000)),
        // more than 9 digits after the decimal point
        ("0.3333333333333333333h", Nanos(20 * M)),
        // 2^53 + 1 cannot be stored exactly in an f64
        ("9007199254740993ns", Nanos((1 << 53) + 1)),
        // the largest and smallest durations
        ("9223372036854775807ns", Nanos(i64::MAX)),
        ("9223372036854775.807us", Nanos(i64::MAX)),
        ("9223372036s854ms775us807ns", Nanos(i64::MAX)),
        ("-9223372036854775808ns", Nanos(i64::MIN)),
        ("-9223372036854775.808us", Nanos(i64::MIN)),
        ("-9223372036s854ms775us808ns", Nanos(i64::MIN)),
        ("-2562047h47m16.854775808s", Nanos(i64::MIN)),
        // a long fraction
        ("0.100000000000000000000h", Nanos(6 * M)),
        // the first overflow check of the fraction's digits
        (
            "0.830103483285477580700h",
            Nanos(49 * M + 48 * S + 372_539_827 * NS),
        ),
    ]);
}

/// Go's own `parseDurationErrorTests`, with the full messages Go gives.
/// Its inputs with invalid UTF-8 (`"\x85\x85"`) cannot reach this
/// parser, which takes `&str` (the config decoder yields strings).
#[test]
fn go_parse_duration_error_tests() {
    check(&[
        ("", Error(r#"time: invalid duration """#)),
        ("3", Error(r#"time: missing unit in duration "3""#)),
        ("-", Error(r#"time: invalid duration "-""#)),
        ("s", Error(r#"time: invalid duration "s""#)),
        (".", Error(r#"time: invalid duration ".""#)),
        ("-.", Error(r#"time: invalid duration "-.""#)),
        (".s", Error(r#"time: invalid duration ".s""#)),
        ("+.s", Error(r#"time: invalid duration "+.s""#)),
        ("1d", Error(r#"time: unknown unit "d" in duration "1d""#)),
        (
            "\u{FFFD}",
            Error(r#"time: invalid duration "\xef\xbf\xbd""#),
        ),
        (
            "\u{FFFD} hello \u{FFFD} world",
            Error(r#"time: invalid duration "\xef\xbf\xbd hello \xef\xbf\xbd world""#),
        ),
        // overflow
        (
            "9223372036854775810ns",
            Error(r#"time: invalid duration "9223372036854775810ns""#),
        ),
        (
            "9223372036854775808ns",
            Error(r#"time: invalid duration "9223372036854775808ns""#),
        ),
        (
            "-9223372036854775809ns",
            Error(r#"time: invalid duration "-9223372036854775809ns""#),
        ),
        (
            "9223372036854776us",
            Error(r#"time: invalid duration "9223372036854776us""#),
        ),
        ("3000000h", Error(r#"time: invalid duration "3000000h""#)),
        (
            "9223372036854775.808us",
            Error(r#"time: invalid duration "9223372036854775.808us""#),
        ),
        (
            "9223372036854ms775us808ns",
            Error(r#"time: invalid duration "9223372036854ms775us808ns""#),
        ),
    ]);
}

/// Inputs beyond Go's tables, with what Go 1.19's `time.ParseDuration`
/// returned for each (its algorithm is unchanged in later releases).
#[test]
fn matches_go_on_edge_cases() {
    check(&[
        // Fractions longer than 19 digits: the digits past what fits
        // are dropped, and the f64 steps round the rest. These
        // overflowed (a panic in debug builds) before.
        ("0.999999999999999999999999999999s", Nanos(S)),
        ("0.999999999999999999999999999999m", Nanos(M - 1)),
        ("0.999999999999999999999999999999h", Nanos(H)),
        ("0.999999999999999999999999999999ms", Nanos(MS)),
        ("0.999999999999999999999999999999us", Nanos(US)),
        ("0.999999999999999999999999999999ns", Nanos(1)),
        ("-0.999999999999999999999999999999m", Nanos(-(M - 1))),
        ("0.9223372036854775808h", Nanos(3_320_413_933_267)),
        ("0.9223372036854775809h", Nanos(3_320_413_933_267)),
        ("0.92233720368547758079h", Nanos(3_320_413_933_267)),
        ("0.000000000001234567890123456789h", Nanos(4)),
        ("0.0000000000001234567890123456789h", Nanos(0)),
        ("0.3333333333333333333m", Nanos(20 * S)),
        ("0.7h", Nanos(42 * M)),
        ("2.3h", Nanos(2 * H + 18 * M)),
        // below a nanosecond, truncated
        (".0000000001s", Nanos(0)),
        ("1.0000000009s", Nanos(S)),
        ("0.000000001s", Nanos(1)),
        ("0.0000000015s", Nanos(1)),
        // the range
        ("2562047h", Nanos(2_562_047 * H)),
        ("2562048h", Error(r#"time: invalid duration "2562048h""#)),
        ("-2562048h", Error(r#"time: invalid duration "-2562048h""#)),
        ("153722867m", Nanos(153_722_867 * M)),
        (
            "153722868m",
            Error(r#"time: invalid duration "153722868m""#),
        ),
        (
            "2562047.8h",
            Error(r#"time: invalid duration "2562047.8h""#),
        ),
        (
            "18446744073709551616ns",
            Error(r#"time: invalid duration "18446744073709551616ns""#),
        ),
        (
            "9223372036854775808.5ns",
            Error(r#"time: invalid duration "9223372036854775808.5ns""#),
        ),
        ("-9223372036854775808.9ns", Nanos(i64::MIN)),
        ("-9223372036854775807.99999999999ns", Nanos(-i64::MAX)),
        (
            "4611686018427387904ns4611686018427387904ns",
            Error(r#"time: invalid duration "4611686018427387904ns4611686018427387904ns""#),
        ),
        (
            "-4611686018427387904ns4611686018427387904ns",
            Nanos(i64::MIN),
        ),
        // Go's uint64 sum wraps here, and Go returns 0 without error.
        ("9223372036854775808ns9223372036854775808ns", Nanos(0)),
        ("-9223372036854775808ns9223372036854775808ns1ns", Nanos(-1)),
        // signs, zero and the grammar
        ("1.5h", Nanos(H + 30 * M)),
        ("-1s", Nanos(-S)),
        ("-0s", Nanos(0)),
        ("0s", Nanos(0)),
        ("0ns", Nanos(0)),
        ("1h1h1h", Nanos(3 * H)),
        ("1s.5ms", Nanos(S + 500 * US)),
        ("1µs", Nanos(US)),
        ("+", Error(r#"time: invalid duration "+""#)),
        ("+-1s", Error(r#"time: invalid duration "+-1s""#)),
        ("-+1s", Error(r#"time: invalid duration "-+1s""#)),
        ("--1s", Error(r#"time: invalid duration "--1s""#)),
        (" 1s", Error(r#"time: invalid duration " 1s""#)),
        ("..5s", Error(r#"time: invalid duration "..5s""#)),
        ("1.s.s", Error(r#"time: invalid duration "1.s.s""#)),
        ("1s.", Error(r#"time: invalid duration "1s.""#)),
        ("1ns.", Error(r#"time: invalid duration "1ns.""#)),
        (
            "99999999999999999999x",
            Error(r#"time: invalid duration "99999999999999999999x""#),
        ),
        ("1", Error(r#"time: missing unit in duration "1""#)),
        ("00", Error(r#"time: missing unit in duration "00""#)),
        ("0.0", Error(r#"time: missing unit in duration "0.0""#)),
        (
            "1.2.3s",
            Error(r#"time: missing unit in duration "1.2.3s""#),
        ),
        ("5..s", Error(r#"time: missing unit in duration "5..s""#)),
        ("1s.5", Error(r#"time: missing unit in duration "1s.5""#)),
        ("1x", Error(r#"time: unknown unit "x" in duration "1x""#)),
        ("1S", Error(r#"time: unknown unit "S" in duration "1S""#)),
        ("1H", Error(r#"time: unknown unit "H" in duration "1H""#)),
        (
            "1e9ns",
            Error(r#"time: unknown unit "e" in duration "1e9ns""#),
        ),
        ("1s ", Error(r#"time: unknown unit "s " in duration "1s ""#)),
        // Go's quoting of the input in messages
        ("\"1s\"", Error(r#"time: invalid duration "\"1s\"""#)),
        (
            "1\\s",
            Error(r#"time: unknown unit "\\s" in duration "1\\s""#),
        ),
        (
            "1\ts",
            Error(r#"time: unknown unit "\x09s" in duration "1\x09s""#),
        ),
        (
            "1µ",
            Error(r#"time: unknown unit "\xc2\xb5" in duration "1\xc2\xb5""#),
        ),
        (
            "1é",
            Error(r#"time: unknown unit "\xc3\xa9" in duration "1\xc3\xa9""#),
        ),
        (
            "1😀",
            Error(r#"time: unknown unit "\xf0\x9f\x98\x80" in duration "1\xf0\x9f\x98\x80""#),
        ),
    ]);
}

/// Long runs of digits, also from Go 1.19.
#[test]
fn long_digit_runs_match_go() {
    let nines = "9".repeat(100);
    let cases = [
        (format!("0.{nines}s"), S),
        (format!("0.{nines}h"), H),
        (format!("0.{}h", "1".repeat(100)), 6 * M + 40 * S),
        (format!("1.{}1s", "0".repeat(100)), S),
        // past 308 zeros the scale is infinite and the share zero
        (format!("0.{}1h", "0".repeat(330)), 0),
        (format!("{}1s", "0".repeat(1000)), S),
        (format!("-{}s", "0".repeat(500)), 0),
    ];
    for (text, nanos) in cases {
        assert_eq!(
            parse_go_duration_signed(&text),
            Ok(GoDuration::from_nanos(nanos)),
            "input {text:?}"
        );
    }
}

#[test]
fn overflow_and_syntax_errors_are_told_apart() {
    for text in [
        "9223372036854775808ns",
        "99999999999999999999x",
        "2562048h",
        "2562047.8h",
        "4611686018427387904ns4611686018427387904ns",
    ] {
        assert_eq!(
            parse_go_duration_signed(text),
            Err(DurationError::Overflow(text.into()))
        );
    }
    for text in ["", "+", "s", ".s", "1s."] {
        assert_eq!(
            parse_go_duration_signed(text),
            Err(DurationError::Invalid(text.into()))
        );
    }
    assert_eq!(
        parse_go_duration_signed("1µ"),
        Err(DurationError::UnknownUnit {
            unit: "µ".into(),
            text: "1µ".into()
        })
    );
}

#[test]
fn unsigned_parse_refuses_negative_values() {
    assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_go_duration("-0s"), Ok(Duration::ZERO));
    assert_eq!(
        parse_go_duration("-1ns"),
        Err(DurationError::Negative("-1ns".into()))
    );
    assert_eq!(
        parse_go_duration("-1ns").unwrap_err().to_string(),
        r#"negative duration "-1ns""#
    );
    assert_eq!(
        parse_go_duration("0.999999999999999999999999999999m"),
        Ok(Duration::from_nanos(59_999_999_999))
    );
    assert_eq!(
        parse_go_duration("5d"),
        Err(DurationError::UnknownUnit {
            unit: "d".into(),
            text: "5d".into()
        })
    );
    assert_eq!(GoDuration::from_nanos(-5).to_std(), None);
    assert_eq!(GoDuration::MIN.to_std_saturating(), Duration::ZERO);
    assert_eq!(
        GoDuration::MAX.to_std_saturating(),
        Duration::from_nanos(i64::MAX as u64)
    );
    assert_eq!("1.5s".parse(), Ok(GoDuration::from_nanos(S + 500 * MS)));
}

/// Go's `durationTests` for `Duration.String()`, and their negations.
#[test]
fn formats_as_go_string() {
    let cases = [
        ("0s", 0),
        ("1ns", NS),
        ("1.1µs", 1100 * NS),
        ("2.2ms", 2200 * US),
        ("3.3s", 3300 * MS),
        ("4m5s", 4 * M + 5 * S),
        ("4m5.001s", 4 * M + 5001 * MS),
        ("5h6m7.001s", 5 * H + 6 * M + 7001 * MS),
        ("8m0.000000001s", 8 * M + 1),
        ("2562047h47m16.854775807s", i64::MAX),
        ("-2562047h47m16.854775808s", i64::MIN),
    ];
    for (text, nanos) in cases {
        assert_eq!(GoDuration::from_nanos(nanos).to_string(), text);
        if nanos > 0 {
            assert_eq!(
                GoDuration::from_nanos(-nanos).to_string(),
                format!("-{text}")
            );
        }
    }
    assert_eq!(GoDuration::from_nanos(H).to_string(), "1h0m0s");
    assert_eq!(
        GoDuration::from_nanos(59_999_999_999).to_string(),
        "59.999999999s"
    );
}

/// SplitMix64: a fixed sequence, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Go's `TestParseDurationRoundTrip`, over every resolution rather than
/// milliseconds only: `String()` always parses back to the same value.
#[test]
fn formatted_durations_parse_back() {
    let mut rng = Rng(1);
    let extremes = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
    let random = (0..20_000).map(|i| {
        let bits = rng.next();
        // Small values too, where the units below a second show.
        (if i % 2 == 0 {
            bits
        } else {
            bits >> (bits % 64)
        }) as i64
    });
    for nanos in extremes.into_iter().chain(random) {
        let duration = GoDuration::from_nanos(nanos);
        let text = duration.to_string();
        assert_eq!(parse_go_duration_signed(&text), Ok(duration), "{text}");
    }
}

/// Strings of duration-like pieces and long digit runs never panic
/// (debug builds check every overflow), and whatever parses formats to
/// a string that parses back to it.
#[test]
fn arbitrary_strings_never_panic() {
    const PIECES: [&str; 24] = [
        "0",
        "1",
        "5",
        "9",
        ".",
        "-",
        "+",
        "ns",
        "us",
        "µs",
        "μs",
        "ms",
        "s",
        "m",
        "h",
        "µ",
        "x",
        " ",
        "é",
        "\u{FFFD}",
        "9223372036854775808",
        "2562047",
        "922337203685477580",
        "18446744073709551616",
    ];
    let mut rng = Rng(2);
    for _ in 0..50_000 {
        let mut text = String::new();
        for _ in 0..rng.below(12) {
            match rng.below(8) {
                0 => {
                    let digit = char::from(b'0' + rng.below(10) as u8);
                    let run = rng.below(400);
                    text.extend(std::iter::repeat_n(digit, run));
                }
                1 => {
                    text.extend((0..rng.below(60)).map(|_| char::from(b'0' + rng.below(10) as u8)));
                }
                _ => text.push_str(PIECES[rng.below(PIECES.len())]),
            }
        }
        let Ok(duration) = parse_go_duration_signed(&text) else {
            continue;
        };
        let formatted = duration.to_string();
        assert_eq!(
            parse_go_duration_signed(&formatted),
            Ok(duration),
            "{text:?} gave {formatted}"
        );
        assert_eq!(parse_go_duration(&text).ok(), duration.to_std(), "{text:?}");
    }
}
