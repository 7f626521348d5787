//! The benchmark's CIDR lists: deterministic, varied in prefix length like
//! real non-masquerade lists, and clear of every address the lab sends to,
//! so that the flow destination is always masqueraded.

use std::{
    collections::HashSet,
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
};

/// IPv4 ranges no generated prefix may overlap: the lab's pods and uplink,
/// the flow destination (203.0.113.5), loopback, link-local, multicast and
/// reserved space, and the inside range listed explicitly.
const EXCLUDED_V4: [(u32, u8); 9] = [
    (0x0000_0000, 8),  // 0.0.0.0/8
    (0x0a00_0000, 8),  // 10.0.0.0/8 (pods)
    (0x7f00_0000, 8),  // 127.0.0.0/8
    (0xa9fe_0000, 16), // 169.254.0.0/16
    (0xac10_0000, 12), // 172.16.0.0/12
    (0xc000_0200, 24), // 192.0.2.0/24 (node uplink)
    (0xcb00_7100, 24), // 203.0.113.0/24 (flow destination)
    (0xc0a8_0000, 16), // 192.168.0.0/16
    (0xe000_0000, 3),  // 224.0.0.0/3
];

/// Prefix lengths drawn for IPv4, weighted towards /24 as real lists are.
const V4_LENGTHS: [u8; 16] = [
    16, 18, 20, 22, 23, 24, 24, 24, 24, 25, 26, 27, 28, 29, 30, 32,
];
/// Prefix lengths drawn for IPv6.
const V6_LENGTHS: [u8; 16] = [
    32, 36, 40, 44, 48, 48, 48, 52, 56, 56, 60, 64, 64, 64, 96, 128,
];

/// splitmix64: tiny, deterministic, good enough to spread prefixes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn mask_v4(length: u8) -> u32 {
    if length == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(length))
    }
}

fn overlaps_v4((a, a_len): (u32, u8), (b, b_len): (u32, u8)) -> bool {
    let shorter = a_len.min(b_len);
    a & mask_v4(shorter) == b & mask_v4(shorter)
}

/// `count` distinct IPv4 prefixes: 172.16.0.0/12 first, so that the lab's
/// "inside" address (172.16.5.5) keeps its source under every contender
/// with exclusions (a quick proof that they decide alike), then random
/// ones that overlap nothing in the excluded ranges. Same count, same list.
pub(super) fn ipv4(count: usize) -> Vec<(Ipv4Addr, u8)> {
    let mut rng = Rng(0x1b_a5ed);
    let mut seen = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    if count > 0 {
        seen.insert((0xac10_0000, 12));
        out.push((Ipv4Addr::new(172, 16, 0, 0), 12));
    }
    while out.len() < count {
        let draw = rng.next();
        let length = V4_LENGTHS[(draw >> 60) as usize];
        let network = (draw as u32) & mask_v4(length);
        let prefix = (network, length);
        if EXCLUDED_V4
            .iter()
            .any(|&excluded| overlaps_v4(prefix, excluded))
        {
            continue;
        }
        if seen.insert(prefix) {
            out.push((Ipv4Addr::from(network), length));
        }
    }
    out
}

/// `count` distinct IPv6 prefixes inside 2000::/3, none inside the lab's
/// 2001:db8::/32.
pub(super) fn ipv6(count: usize) -> Vec<(Ipv6Addr, u8)> {
    let mut rng = Rng(0x6_b5ed);
    let mut seen = HashSet::with_capacity(count);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let high = rng.next();
        let low = rng.next();
        let length = V6_LENGTHS[(high >> 60) as usize];
        let raw = (u128::from(high) << 64) | u128::from(low);
        // Force 2000::/3, then clear the host bits.
        let raw = (raw & (u128::MAX >> 3)) | (1u128 << 125);
        let network = raw & (u128::MAX << (128 - u32::from(length)));
        if network >> 96 == 0x2001_0db8 {
            continue;
        }
        if seen.insert((network, length)) {
            out.push((Ipv6Addr::from(network), length));
        }
    }
    out
}

/// One CIDR per line, both families, for `ip-masq-bench --cidrs`.
pub(super) fn lines(v4: &[(Ipv4Addr, u8)], v6: &[(Ipv6Addr, u8)]) -> String {
    let mut out = String::with_capacity(24 * (v4.len() + v6.len()));
    for (address, length) in v4 {
        let _ = writeln!(out, "{address}/{length}");
    }
    for (address, length) in v6 {
        let _ = writeln!(out, "{address}/{length}");
    }
    out
}

/// The agent's config file for these CIDRs, written the way ConfigMaps
/// usually are: a YAML block list.
pub(super) fn config_yaml(v4: &[(Ipv4Addr, u8)]) -> String {
    let mut out = String::with_capacity(20 * v4.len() + 32);
    out.push_str("nonMasqueradeCIDRs:\n");
    for (address, length) in v4 {
        let _ = writeln!(out, "  - {address}/{length}");
    }
    out
}

/// The same config in JSON, which the agent also reads (and decodes much
/// faster than YAML).
pub(super) fn config_json(v4: &[(Ipv4Addr, u8)]) -> String {
    let mut out = String::with_capacity(20 * v4.len() + 32);
    out.push_str("{\"nonMasqueradeCIDRs\": [");
    for (index, (address, length)) in v4.iter().enumerate() {
        let separator = if index == 0 { "" } else { ", " };
        let _ = write!(out, "{separator}\"{address}/{length}\"");
    }
    out.push_str("]}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(prefix: (Ipv4Addr, u8), address: &str) -> bool {
        let address: Ipv4Addr = address.parse().unwrap();
        overlaps_v4((u32::from(prefix.0), prefix.1), (u32::from(address), 32))
    }

    #[test]
    fn lists_are_deterministic_distinct_and_prefix_closed() {
        let a = ipv4(5000);
        assert_eq!(a, ipv4(5000));
        assert_eq!(
            &ipv4(100)[..],
            &a[..100],
            "a longer list extends a shorter one"
        );
        let distinct: HashSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), a.len());
        assert_eq!(a[0], (Ipv4Addr::new(172, 16, 0, 0), 12));
        for (address, length) in &a {
            assert_eq!(
                u32::from(*address) & !mask_v4(*length),
                0,
                "host bits clear"
            );
        }
        let v6 = ipv6(5000);
        assert_eq!(v6.iter().collect::<HashSet<_>>().len(), 5000);
        assert!(
            v6.iter()
                .all(|(address, _)| address.segments()[0] >> 13 == 1)
        );
    }

    #[test]
    fn no_prefix_covers_what_the_lab_sends_to() {
        for prefix in ipv4(20_000).into_iter().skip(1) {
            for address in [
                "203.0.113.5",
                "10.244.1.10",
                "192.0.2.2",
                "172.16.5.5",
                "169.254.50.5",
            ] {
                assert!(!contains(prefix, address), "{prefix:?} covers {address}");
            }
        }
        assert!(contains(ipv4(1)[0], "172.16.5.5"));
    }

    #[test]
    fn lengths_vary() {
        let lengths: HashSet<u8> = ipv4(1000).iter().map(|(_, length)| *length).collect();
        assert!(lengths.len() >= 12, "{lengths:?}");
    }

    #[test]
    fn renderings() {
        let v4 = [(Ipv4Addr::new(1, 2, 3, 0), 24)];
        let v6 = [("2400::".parse().unwrap(), 32)];
        assert_eq!(lines(&v4, &v6), "1.2.3.0/24\n2400::/32\n");
        assert_eq!(config_yaml(&v4), "nonMasqueradeCIDRs:\n  - 1.2.3.0/24\n");
        let two = [v4[0], (Ipv4Addr::new(5, 6, 0, 0), 16)];
        assert_eq!(
            config_json(&two),
            "{\"nonMasqueradeCIDRs\": [\"1.2.3.0/24\", \"5.6.0.0/16\"]}\n"
        );
        assert_eq!(config_json(&[]), "{\"nonMasqueradeCIDRs\": []}\n");
    }
}
