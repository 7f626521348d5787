//! The node's component configurations, rendered from the layout. Pure:
//! text in, text out; `Node::start` writes them before each start.

use std::path::Path;

use super::{
    CGROUP_ROOT, CLUSTER_CIDR, CLUSTER_DNS, Layout, NODE_IP, NODE_NAME, PAUSE_IMAGE, POD_CIDR,
    POD_GATEWAY, SYNC_FREQUENCY,
};

/// A kubeconfig for one component's client certificate.
pub fn kubeconfig(certs: &Path, name: &str, user: &str) -> String {
    let certs = certs.display();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    certificate-authority: {certs}/ca.crt
    server: https://127.0.0.1:6443
users:
- name: {user}
  user:
    client-certificate: {certs}/{name}.crt
    client-key: {certs}/{name}.key
contexts:
- name: local
  context: {{cluster: local, user: {user}}}
current-context: local
"
    )
}

/// containerd 1.6, the last line that serves the CRI v1alpha2 kubelet 1.20
/// speaks. Inside the node's mount namespace /var is the run directory's
/// `var` and /run a private tmpfs, so the default paths are the node's own.
pub fn containerd(layout: &Layout) -> String {
    let runc = layout.debian_binary("usr/sbin/runc");
    let cni_bin = layout.cni_bin();
    let cni_conf = layout.etc().join("cni");
    format!(
        r#"version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_selinux = false
  # The machine has no CAP_SYS_RESOURCE, not even in the bounding set, so
  # no oom_score_adj may go below containerd's own: the pause container's
  # -998 would make runc's init die ("can't get final child's PID from
  # pipe: EOF"). Clamp instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
"#,
        runc = runc.display(),
        cni_bin = cni_bin.display(),
        cni_conf = cni_conf.display(),
    )
}

/// The CNI network: the bridge plugin with host-local IPAM, then portmap
/// for hostPort, as kubenet-style clusters chain them. `ipMasq` is off, as
/// the README tells a user who hands masquerading to ip-masq: with it on,
/// the bridge plugin masquerades every pod's traffic itself.
pub fn cni_conflist() -> String {
    format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "ipm-bridge",
  "plugins": [
    {{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {{"type": "host-local", "dataDir": "/var/lib/cni/networks",
              "ranges": [[{{"subnet": "{POD_CIDR}", "gateway": "{POD_GATEWAY}"}}]],
              "routes": [{{"dst": "0.0.0.0/0"}}]}}}},
    {{"type": "portmap", "capabilities": {{"portMappings": true}}}}
  ]
}}
"#
    )
}

/// The kubelet. `syncFrequency` bounds how soon a ConfigMap edit reaches a
/// mounted volume: the default 1m gave 57–76 s, 10s gives 12–15 s.
pub fn kubelet(layout: &Layout) -> String {
    let certs = layout.certs();
    let certs = certs.display();
    let resolv = layout.etc().join("resolv.conf");
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {certs}/ca.crt}}
authorization: {{mode: Webhook}}
tlsCertFile: {certs}/kubelet-server.crt
tlsPrivateKeyFile: {certs}/kubelet-server.key
clusterDomain: cluster.local
clusterDNS: [{CLUSTER_DNS}]
resolvConf: {resolv}
failSwapOn: false
address: {NODE_IP}
healthzBindAddress: 127.0.0.1
syncFrequency: {SYNC_FREQUENCY}
runtimeRequestTimeout: 5m
# Memory only: the node shares its disk with the host, whose other users
# must not get the test pods evicted (or the node tainted) by filling it.
evictionHard: {{memory.available: \"100Mi\"}}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
serializeImagePulls: false
",
        resolv = resolv.display(),
    )
}

/// kube-proxy in iptables mode. The conntrack settings are 0: they are
/// host-global sysctls, which a test node must leave alone.
pub fn kube_proxy(layout: &Layout) -> String {
    let kubeconfig = layout.certs().join("kube-proxy.kubeconfig");
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kubeconfig}}}
hostnameOverride: {NODE_NAME}
mode: iptables
clusterCIDR: {CLUSTER_CIDR}
bindAddress: {NODE_IP}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
",
        kubeconfig = kubeconfig.display(),
    )
}

/// The script the node's namespace holder runs: the mounts of the node's
/// private mount namespace, then it stays as that namespace's first
/// process. `$1` is the run directory, `$2` the file for its pid.
pub const NODE_INIT: &str = r#"set -eu
run=$1
# Nothing mounted here reaches the host.
mount --make-rprivate /
# The cgroup v1 hierarchies the host has, to mount again under the new
# sysfs (same controllers, hence the same host-global hierarchies).
cgroups=$(awk '$3 == "cgroup" || $3 == "cgroup2" { print $2, $3, $4 }' /proc/self/mounts)
# This network namespace's sysfs (as `ip netns exec` does).
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup_root /sys/fs/cgroup
echo "$cgroups" | while read -r point type options; do
  [ -n "$point" ] || continue
  mkdir -p "$point"
  mount -t "$type" -o "$options" "$type" "$point"
done
# A bpffs at /sys/fs/bpf, shared, as systemd mounts it on real nodes: the
# DaemonSet's Bidirectional mount needs a shared mount there.
mount -t bpf -o nosuid,nodev,noexec,mode=700 bpf /sys/fs/bpf
mount --make-shared /sys/fs/bpf
# A private /run: containerd's state, shim sockets, xtables.lock, netns.
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mkdir -p /run/lock /run/netns
# Every /var path the kubelet, containerd and the CNI plugins hard-code.
mount --bind "$run/var" /var
# The host-global sysctls the kubelet would otherwise rewrite: it reads
# the value it wants from these files and so writes nothing.
fake() {
  file="$run/sysctl/$(echo "$1" | tr / _)"
  echo "$2" > "$file"
  mount --bind "$file" "/proc/sys/$1"
}
mkdir -p "$run/sysctl"
fake vm/overcommit_memory 1
fake vm/panic_on_oom 0
fake kernel/panic 10
fake kernel/panic_on_oops 1
fake kernel/keys/root_maxkeys 1000000
fake kernel/keys/root_maxbytes 25000000
# Shared propagation everywhere, as systemd sets it up on real nodes:
# the containers' mount namespaces are then slaves of the node's, so the
# pod network namespaces containerd unmounts here go from theirs too.
mount --make-rshared /
echo $$ > "$2"
exec sleep infinity
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_name_the_cache_paths() {
        let layout = Layout::new("/cache");
        assert!(containerd(&layout).contains("BinaryName = \"/cache/debian/usr/sbin/runc\""));
        assert!(containerd(&layout).contains("conf_dir = \"/cache/run/etc/cni\""));
        assert!(kubelet(&layout).contains("clientCAFile: /cache/certs/ca.crt"));
        assert!(kube_proxy(&layout).contains("kubeconfig: /cache/certs/kube-proxy.kubeconfig"));
        assert!(kubeconfig(Path::new("/c"), "admin", "admin").contains("client-key: /c/admin.key"));
    }

    #[test]
    fn the_cni_network_leaves_masquerading_to_ip_masq() {
        let conflist: serde_json::Value = serde_json::from_str(&cni_conflist()).expect("json");
        assert_eq!(conflist["plugins"][0]["type"], "bridge");
        assert_eq!(conflist["plugins"][0]["ipMasq"], false);
        assert_eq!(conflist["plugins"][1]["type"], "portmap");
    }
}
