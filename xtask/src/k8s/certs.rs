//! The cluster's certificates (a self-signed CA and one key pair per
//! component, made with openssl) and the kubeconfigs that use them.
//! Made once and kept in the cache; nothing outside it trusts them.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, bail};
use lab::k8s::{self, Layout};

/// One leaf certificate: file name, subject CN, O, subjectAltName, usage.
struct Leaf {
    name: &'static str,
    cn: String,
    organisation: &'static str,
    sans: String,
    usage: &'static str,
}

fn leaves() -> Vec<Leaf> {
    let node = k8s::NODE_NAME;
    let node_ip = k8s::NODE_IP;
    let api = k8s::API_SERVICE_IP;
    let leaf = |name, cn: &str, organisation, sans: String, usage| Leaf {
        name,
        cn: cn.to_owned(),
        organisation,
        sans,
        usage,
    };
    vec![
        leaf(
            "apiserver",
            "kube-apiserver",
            "",
            format!(
                "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:{node_ip},IP:{api}"
            ),
            "serverAuth",
        ),
        leaf(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            "system:masters",
            String::new(),
            "clientAuth",
        ),
        leaf(
            "admin",
            "kubernetes-admin",
            "system:masters",
            String::new(),
            "clientAuth",
        ),
        leaf(
            "controller-manager",
            "system:kube-controller-manager",
            "",
            String::new(),
            "clientAuth",
        ),
        leaf(
            "scheduler",
            "system:kube-scheduler",
            "",
            String::new(),
            "clientAuth",
        ),
        leaf(
            "kubelet",
            &format!("system:node:{node}"),
            "system:nodes",
            String::new(),
            "clientAuth",
        ),
        leaf(
            "kubelet-server",
            node,
            "",
            format!("DNS:{node},DNS:localhost,IP:127.0.0.1,IP:{node_ip}"),
            "serverAuth",
        ),
        leaf(
            "kube-proxy",
            "system:kube-proxy",
            "",
            String::new(),
            "clientAuth",
        ),
    ]
}

/// Runs openssl quietly; its chatter is shown only when it fails.
fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("run openssl")?;
    if !output.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Makes whatever certificate or kubeconfig is missing.
pub(crate) fn ensure(layout: &Layout) -> anyhow::Result<()> {
    let dir = layout.certs();
    fs::create_dir_all(&dir)?;
    if !dir.join("ca.crt").is_file() {
        openssl(&dir, &["genrsa", "-out", "ca.key", "2048"])?;
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-new",
                "-nodes",
                "-key",
                "ca.key",
                "-sha256",
                "-days",
                "3650",
                "-subj",
                "/CN=ip-masq-test-ca",
                "-out",
                "ca.crt",
            ],
        )?;
    }
    for leaf in leaves() {
        let crt = format!("{}.crt", leaf.name);
        if dir.join(&crt).is_file() {
            continue;
        }
        let key = format!("{}.key", leaf.name);
        let csr = format!("{}.csr", leaf.name);
        let ext = format!("{}.ext", leaf.name);
        openssl(&dir, &["genrsa", "-out", &key, "2048"])?;
        let subject = if leaf.organisation.is_empty() {
            format!("/CN={}", leaf.cn)
        } else {
            format!("/O={}/CN={}", leaf.organisation, leaf.cn)
        };
        openssl(
            &dir,
            &["req", "-new", "-key", &key, "-subj", &subject, "-out", &csr],
        )?;
        let mut extensions = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={}\n",
            leaf.usage
        );
        if !leaf.sans.is_empty() {
            extensions.push_str(&format!("subjectAltName={}\n", leaf.sans));
        }
        fs::write(dir.join(&ext), extensions)?;
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "3650",
                "-sha256",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        )?;
        fs::remove_file(dir.join(&csr))?;
        fs::remove_file(dir.join(&ext))?;
    }
    if !dir.join("sa.pub").is_file() {
        openssl(&dir, &["genrsa", "-out", "sa.key", "2048"])?;
        openssl(&dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    }
    for (name, user) in [
        ("admin", "admin".to_owned()),
        (
            "controller-manager",
            "system:kube-controller-manager".to_owned(),
        ),
        ("scheduler", "system:kube-scheduler".to_owned()),
        ("kubelet", format!("system:node:{}", k8s::NODE_NAME)),
        ("kube-proxy", "system:kube-proxy".to_owned()),
    ] {
        fs::write(
            dir.join(format!("{name}.kubeconfig")),
            k8s::config::kubeconfig(&dir, name, &user),
        )?;
    }
    Ok(())
}
