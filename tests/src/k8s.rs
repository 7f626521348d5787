//! A one-node Kubernetes (v1.20.2, built from Debian's archive) for the
//! end-to-end tests of the DaemonSet, and the pieces around it.
//!
//! ```text
//!  external netns (ipm-k8s-ext)                 node netns (ipm-k8s-node) + private mount ns
//!  lo: 172.20.0.10  (inside 172.16.0.0/12)      etcd, kube-apiserver, controller-manager,
//!      203.0.113.10 (outside every default)     scheduler, containerd, kubelet, kube-proxy
//!  up0 10.222.0.1/24 ══ veth ══ up1 ─ macvlan ─ eth0 10.222.0.2/24 (node IP), default via .1
//!                                               lo 10.222.0.3 (a second node address)
//!                                               cni0 10.244.0.1/24, pods 10.244.0.0/24
//!                                               Services 10.96.0.0/16
//! ```
//!
//! Nothing runs in the root network namespace and nothing is mounted in
//! the host's mount namespace. [`Node`] starts, attaches to and stops it;
//! [`external::External`] listens on the external addresses and records
//! the source address of every connection.

pub mod config;
pub mod external;
pub mod kubectl;
pub mod layout;
pub mod node;

pub use layout::Layout;
pub use node::{Node, NodeError};

/// The node's network namespace.
pub const NODE_NETNS: &str = "ipm-k8s-node";
/// The namespace beside the node: its gateway, and the external hosts.
pub const EXTERNAL_NETNS: &str = "ipm-k8s-ext";
/// The Kubernetes node name.
pub const NODE_NAME: &str = "ipm-node";
/// The node's address (its uplink's), which masqueraded traffic carries.
pub const NODE_IP: &str = "10.222.0.2";
/// A second address of the node (on its loopback), for host-network
/// clients whose source shows whether it was kept.
pub const NODE_SECONDARY_IP: &str = "10.222.0.3";
/// The external namespace's address on the uplink: the node's gateway.
pub const EXTERNAL_GATEWAY: &str = "10.222.0.1";
/// An external host inside the default non-masquerade ranges.
pub const EXTERNAL_KEEP: &str = "172.20.0.10";
/// An external host outside every default non-masquerade range.
pub const EXTERNAL_MASQ: &str = "203.0.113.10";
/// The node's pod CIDR on the CNI bridge, and the bridge's address.
pub const POD_CIDR: &str = "10.244.0.0/24";
pub const POD_GATEWAY: &str = "10.244.0.1";
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The `kubernetes` Service's ClusterIP.
pub const API_SERVICE_IP: &str = "10.96.0.1";
pub const CLUSTER_DNS: &str = "10.96.0.10";
/// The cgroup (in every v1 hierarchy) the kubelet puts pods under.
pub const CGROUP_ROOT: &str = "ipm-k8s";
/// The sandbox image, built from Kubernetes' own pause.c.
pub const PAUSE_IMAGE: &str = "localhost/ip-masq-tests/pause:3.4.1";
/// How often the kubelet syncs pods, which bounds how soon a ConfigMap
/// edit reaches a mounted volume (the default, 1m, gave 57–76 s).
pub const SYNC_FREQUENCY: &str = "10s";
