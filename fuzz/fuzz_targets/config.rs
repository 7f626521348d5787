//! Fuzzes the config parser, the one place where bytes from outside the
//! node (a ConfigMap anyone with edit rights can change) meet the agent.
//!
//! For every input and both sets of parse options, `config::parse` must
//! return rather than panic, hang or blow up memory (libFuzzer enforces
//! `-timeout` and `-rss_limit_mb`), and whatever it accepts must satisfy
//! what the rest of the agent relies on: aligned CIDRs, no duplicates, no
//! IPv6 without `--enable-ipv6`, a resync interval of at least one second,
//! and a deterministic result.
//!
//! The parser is the agent's own, from the pure `ip-masq-config` crate, so
//! the fuzzer exercises exactly the code the agent runs without building the
//! rest of the agent (tokio, aya, the eBPF object) under sanitizer flags.

#![no_main]

use std::collections::BTreeSet;

use ip_masq_config::{self as config, MIN_RESYNC_INTERVAL, ParseOptions, table::Table};
use libfuzzer_sys::fuzz_target;

const OPTIONS: [ParseOptions; 2] = [
    ParseOptions {
        enable_ipv6: false,
        nomasq_all_reserved_ranges: false,
    },
    ParseOptions {
        enable_ipv6: true,
        nomasq_all_reserved_ranges: true,
    },
];

fuzz_target!(|data: &[u8]| {
    for options in OPTIONS {
        let Ok(parsed) = config::parse(data, options) else {
            continue;
        };
        let config = &parsed.config;
        for list in [&config.non_masquerade_cidrs, &config.masquerade_cidrs] {
            let unique: BTreeSet<_> = list.iter().collect();
            assert_eq!(unique.len(), list.len(), "duplicates survived: {list:?}");
            for cidr in list {
                assert_eq!(cidr.addr(), cidr.network(), "unaligned CIDR accepted: {cidr}");
                assert!(
                    options.enable_ipv6 || cidr.addr().is_ipv4(),
                    "IPv6 CIDR accepted without --enable-ipv6: {cidr}"
                );
            }
        }
        assert!(config.resync_interval >= MIN_RESYNC_INTERVAL);
        if let Some(limit) = config.cidr_limit {
            assert!(config.non_masquerade_cidrs.len() as i64 <= limit);
        }
        // The table the agent would write is built without panicking, and
        // parsing is a function of the bytes alone.
        let table = Table::effective(config, options.enable_ipv6);
        let (_v4, v6) = table.family_counts();
        assert!(options.enable_ipv6 || v6 == 0);
        assert_eq!(config::parse(data, options).as_ref(), Ok(&parsed));
    }
});
