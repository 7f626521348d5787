//! Who wrote a SNAT rule: Docker, flannel, kubelet and the CNI bridge and
//! ptp plugins by their rules' shapes and comments, Calico by its chains, a
//! left-over ip-masq chain on the other backend; each with its own fix.

use crate::commands::doctor::snat::Position;
use crate::commands::doctor::{Finding, FindingKind};
use crate::kernel::iptables::backends::Listing;
use crate::kernel::iptables::save::Rule;

/// The finding for a SNAT rule pod traffic reaches, named for the
/// component that wrote it when it is recognised.
pub(super) fn classify(
    listing: &Listing,
    rule: &Rule,
    position: Position,
    path: &[String],
    chain: &str,
) -> Finding {
    let command = &listing.command;
    let location = format!("{command} nat {}", path.join(" → "));
    let target = rule.target().map_or("MASQUERADE", |(target, _)| target);
    let when = match position {
        Position::BeforeJump => format!(
            "POSTROUTING reaches it before ip-masq's jump to {chain}, so ip-masq never decides for the packets it matches"
        ),
        Position::AfterJump => format!(
            "ip-masq's chain {chain} RETURNs keep-source packets to POSTROUTING, where this rule then applies {target} to them anyway"
        ),
        Position::NoJump => "ip-masq's jump is missing, so this rule decides alone".to_owned(),
        Position::OtherBackend => format!(
            "{command}'s tables are hooked into the kernel too, next to the ones ip-masq uses, so this rule applies {target} whatever ip-masq decides"
        ),
    };
    let comment = rule.comment().unwrap_or_default();
    let out_interface = rule.option("-o");
    let delete = format!(
        "{command} -t nat -D {}",
        rule.text.trim_start_matches("-A ").trim()
    );
    if target == "MASQUERADE"
        && rule.option("-s").is_some_and(|(_, negated)| !negated)
        && matches!(out_interface, Some((name, true)) if name == "docker0" || name.starts_with("br-"))
    {
        return Finding {
            kind: FindingKind::DockerMasquerade,
            location,
            evidence: rule.text.clone(),
            problem: format!("Docker masquerades its bridge network itself: {when}."),
            fix: format!(
                "Start dockerd with --ip-masq=false (or \"ip-masq\": false in /etc/docker/daemon.json) and restart it, then delete the rule if Docker left it: {delete}"
            ),
        };
    }
    if path.iter().any(|chain| chain == "FLANNEL-POSTRTG") || comment.contains("flanneld masq") {
        return Finding {
            kind: FindingKind::FlannelMasquerade,
            location,
            evidence: rule.text.clone(),
            problem: format!(
                "flanneld masquerades traffic leaving the pod network itself: {when}."
            ),
            fix: format!(
                "Drop --ip-masq from flanneld's arguments (kube-flannel DaemonSet: the container args), or set ipmasq=false where mk-docker-opts.sh writes Docker's options, and restart flanneld. Then remove what it left: {command} -t nat -D POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG; {command} -t nat -F FLANNEL-POSTRTG; {command} -t nat -X FLANNEL-POSTRTG"
            ),
        };
    }
    if comment.contains("kubenet: SNAT for outbound traffic from cluster")
        || (comment.contains("kubelet") && rule.option("-d").is_some_and(|(_, negated)| negated))
    {
        let cidr = rule.option("-d").map_or("?", |(cidr, _)| cidr);
        return Finding {
            kind: FindingKind::KubeletMasquerade,
            location,
            evidence: rule.text.clone(),
            problem: format!(
                "kubelet's --non-masquerade-cidr={cidr} masquerades every destination outside {cidr}: {when}."
            ),
            fix: format!(
                "Set kubelet's --non-masquerade-cidr=0.0.0.0/0 (which turns the rule off), restart kubelet, then delete the rule: {delete}"
            ),
        };
    }
    if let Some(network) = cni_network(comment)
        && path
            .iter()
            .any(|chain| chain.starts_with("CNI-") && !chain.starts_with("CNI-HOSTPORT-"))
    {
        return Finding {
            kind: FindingKind::CniMasquerade,
            location,
            evidence: rule.text.clone(),
            problem: format!(
                "the CNI network \"{network}\" masquerades its pods' traffic itself (the bridge or ptp plugin's \"ipMasq\": true): {when}."
            ),
            fix: format!(
                "Set \"ipMasq\": false for the network \"{network}\" in the CNI config (/etc/cni/net.d/), so that new pods get no such chain; a pod created before keeps its chain until it is recreated, or remove the rule by hand: {delete}"
            ),
        };
    }
    let owner = if path.iter().any(|chain| chain.starts_with("cali-")) {
        " It is Calico's natOutgoing: set `natOutgoing: false` on the IPPool (calicoctl patch ippool NAME -p '{\"spec\":{\"natOutgoing\":false}}') and let ip-masq decide."
    } else if position == Position::OtherBackend && path.iter().any(|c| c == chain) {
        " It is a left-over ip-masq-agent or ip-masq chain on the other iptables backend: delete its jump and the chain there."
    } else {
        ""
    };
    Finding {
        kind: FindingKind::OtherSnat,
        location,
        evidence: rule.text.clone(),
        problem: format!("{target} rule outside ip-masq's chain: {when}."),
        fix: format!(
            "Find the component that owns it (its comment or chain name) and turn its masquerading off, or make it RETURN for the non-masquerade destinations; to remove it by hand: {delete}.{owner}"
        ),
    }
}

/// The network name in the comment that the CNI plugins' `ipMasq` puts on
/// each of its rules: `name: "NET" id: "CONTAINER"`.
fn cni_network(comment: &str) -> Option<&str> {
    let rest = comment.strip_prefix("name: \"")?;
    let (name, rest) = rest.split_once('"')?;
    rest.trim_start().starts_with("id: ").then_some(name)
}

#[cfg(test)]
mod tests {
    use super::cni_network;

    #[test]
    fn the_cni_network_is_read_from_the_plugins_comment_only() {
        assert_eq!(cni_network(r#"name: "a b" id: "c""#), Some("a b"));
        assert_eq!(
            cni_network(r#"name: "k8s-pod-network" id: "4f1c""#),
            Some("k8s-pod-network")
        );
        assert_eq!(cni_network("dnat name: \"x\""), None);
        assert_eq!(cni_network(r#"name: "x" other"#), None);
    }
}
