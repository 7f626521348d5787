//! CIDR validation as upstream's `validate()`: Go's `net.ParseCIDR`, then
//! alignment, then the IPv6 flag.

use std::collections::HashSet;

use ipnet::IpNet;

use super::{ParseOptions, Problem};

/// Validates each CIDR as upstream does; returns the valid ones with
/// duplicates merged, in file order.
pub(super) fn validate_list(
    key: &'static str,
    items: &[String],
    options: ParseOptions,
    problems: &mut Vec<Problem>,
) -> Vec<IpNet> {
    let mut seen = HashSet::with_capacity(items.len());
    let mut cidrs = Vec::with_capacity(items.len());
    for text in items {
        match validate_cidr(text, options) {
            Ok(cidr) => {
                if seen.insert(cidr) {
                    cidrs.push(cidr);
                }
            }
            Err(reason) => problems.push(Problem {
                key,
                value: Some(format!("{text:?}")),
                reason,
            }),
        }
    }
    cidrs
}

/// Validates one CIDR the way upstream does: Go's `net.ParseCIDR` (which
/// refuses leading zeros in IPv4 octets and zones, and takes leading zeros
/// in the prefix length), then alignment; IPv6 needs `--enable-ipv6`.
pub(super) fn validate_cidr(text: &str, options: ParseOptions) -> Result<IpNet, String> {
    const EXPECTED: &str = "not a CIDR (expected ADDRESS/PREFIX, e.g. 10.0.0.0/8)";
    let (address, prefix_len) = text.split_once('/').ok_or(EXPECTED)?;
    let address: std::net::IpAddr = address.parse().map_err(|_| {
        if address
            .split('.')
            .any(|octet| octet.len() > 1 && octet.starts_with('0'))
        {
            "not a CIDR: an IPv4 octet has a leading zero (Go reads none)".to_owned()
        } else {
            EXPECTED.to_owned()
        }
    })?;
    let max_len = if address.is_ipv4() { 32 } else { 128 };
    // Go's dtoi: one or more decimal digits, leading zeros allowed.
    let prefix_len: u8 = (!prefix_len.is_empty()
        && prefix_len.len() <= 10
        && prefix_len.bytes().all(|b| b.is_ascii_digit()))
    .then(|| prefix_len.parse::<u32>().ok())
    .flatten()
    .filter(|len| *len <= max_len)
    .and_then(|len| u8::try_from(len).ok())
    .ok_or_else(|| format!("not a CIDR: the prefix length must be 0 to {max_len}"))?;
    if let std::net::IpAddr::V6(v6) = address
        && let Some(v4) = v6.to_ipv4_mapped()
    {
        return Err(format!(
            "an IPv4-mapped IPv6 CIDR: ip-masq-agent writes it into its IPv4 chain, where iptables refuses it; write the IPv4 range instead (e.g. {v4}/{})",
            prefix_len.saturating_sub(96)
        ));
    }
    let cidr = IpNet::new(address, prefix_len).expect("prefix length checked");
    if cidr.addr() != cidr.network() {
        return Err(format!(
            "not aligned to its prefix: host bits are set (did you mean {}?)",
            cidr.trunc()
        ));
    }
    if matches!(cidr, IpNet::V6(_)) && !options.enable_ipv6 {
        return Err("IPv6 CIDR given but IPv6 is not enabled (use --enable-ipv6)".to_owned());
    }
    Ok(cidr)
}
