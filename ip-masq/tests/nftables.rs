//! The nftables reader on real nftables: tables made with `nft -f` in a
//! namespace of the test's own (Docker-like, kube-proxy-like, flannel-like,
//! beside iptables-nft's own chain) give exactly the findings `doctor`
//! needs. Root.

use ip_masq::{commands::doctor::nftables::snat_statements, kernel::nftables};
use lab::Netns;

#[test]
#[ignore = "needs root"]
fn real_nft_tables_give_the_reachable_snat_statements() {
    let node = Netns::new("ipm-nft-");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nft-lab.nft");
    node.exec_ok("nft", &["-f", fixture]);
    // iptables-nft's own table, as ip-masq's chain lives in it.
    node.exec_ok(
        "iptables",
        &["-w", "-t", "nat", "-A", "POSTROUTING", "-j", "MASQUERADE"],
    );
    let found = node.enter(|| snat_statements(&nftables::ruleset().expect("nft -j list ruleset")));
    let summary: Vec<(String, &str, Option<u64>, bool)> = found
        .iter()
        .map(|f| {
            (
                format!("{} {} {}", f.family, f.table, f.chain),
                f.statement,
                f.only_marked,
                f.is_kube_proxy(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "ip dockerlike POSTROUTING".to_owned(),
                "masquerade",
                None,
                false
            ),
            (
                "ip kube-proxy masquerading".to_owned(),
                "masquerade",
                Some(0x4000),
                true
            ),
            ("inet flannel post".to_owned(), "snat", None, false),
        ]
    );
    // The delete command it prints works.
    let docker = &found[0];
    let command = docker.delete_command();
    let words: Vec<&str> = command.split_whitespace().collect();
    node.exec_ok(words[0], &words[1..]);
    let left = node.enter(|| snat_statements(&nftables::ruleset().expect("ruleset")));
    assert_eq!(left.len(), 2);
}
