//! What the end-to-end tests do on the node: kubectl, waiting for pods,
//! HTTP inside the node's network namespace, and pods that run the tests'
//! traffic tool (`ipm-flows`, mounted from the host). Failures panic with
//! the command and its output, as the lab's helpers do.

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{NODE_NETNS, Node};
use crate::netns::enter_netns;

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

/// The image the tests' pods run: the agent's own, which has a shell, the
/// iptables tools and glibc for the traffic tool.
pub const TOOL_IMAGE: &str = "ip-masq:latest";

/// Where pods find the traffic tool.
pub const TOOLS_MOUNT: &str = "/opt/ipm";

impl Node {
    /// kubectl ARGS, panicking unless it succeeds; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args).expect("run kubectl");
        assert!(
            output.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            describe(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// kubectl ARGS with `input` on stdin.
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .kubectl_command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())
            .expect("write to kubectl");
        child.wait_with_output().expect("kubectl output")
    }

    /// `kubectl apply -f -` of a manifest (YAML or JSON).
    pub fn apply(&self, manifest: &str) {
        let output = self.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(
            output.status.success(),
            "kubectl apply: {}\n{manifest}",
            describe(&output)
        );
    }

    /// `kubectl delete --ignore-not-found --wait` of a manifest.
    pub fn delete(&self, manifest: &str) {
        let output = self.kubectl_stdin(
            &[
                "delete",
                "--ignore-not-found",
                "--wait=true",
                "--timeout=120s",
                "-f",
                "-",
            ],
            manifest,
        );
        assert!(
            output.status.success(),
            "kubectl delete: {}",
            describe(&output)
        );
    }

    /// `kubectl get ... -o json`.
    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&full)).expect("kubectl JSON")
    }

    /// Waits for a pod's Ready condition to become `ready`; panics after
    /// `timeout` with the pod's description.
    pub fn wait_pod_ready(&self, namespace: &str, pod: &str, ready: bool, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.pod_ready(namespace, pod) == Some(ready) {
                return;
            }
            if Instant::now() >= deadline {
                let description = self
                    .kubectl(&["-n", namespace, "describe", "pod", pod])
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!("pod {namespace}/{pod} not Ready={ready} after {timeout:?}:\n{description}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A pod's Ready condition, if the pod exists and has one.
    pub fn pod_ready(&self, namespace: &str, pod: &str) -> Option<bool> {
        let output = self
            .kubectl(&[
                "-n",
                namespace,
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .ok()?;
        match output.stdout.as_slice() {
            b"True" => Some(true),
            b"False" => Some(false),
            _ => None,
        }
    }

    /// The names of the pods matching a label selector.
    pub fn pods(&self, namespace: &str, selector: &str) -> Vec<String> {
        let list = self.get_json(&["-n", namespace, "pods", "-l", selector]);
        list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                    .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until no pod matches the selector (deleted ones included).
    pub fn wait_no_pods(&self, namespace: &str, selector: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let list = self.get_json(&["-n", namespace, "pods", "-l", selector]);
            if list["items"].as_array().is_none_or(Vec::is_empty) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pods {selector} still there after {timeout:?}: {list:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A pod's IP.
    pub fn pod_ip(&self, namespace: &str, pod: &str) -> String {
        self.kubectl_ok(&[
            "-n",
            namespace,
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.podIP}",
        ])
    }

    /// `kubectl exec POD -- COMMAND`, whatever its exit.
    pub fn exec_in(&self, namespace: &str, target: &str, command: &[&str]) -> Output {
        let mut args = vec!["-n", namespace, "exec", target, "--"];
        args.extend_from_slice(command);
        self.kubectl(&args).expect("run kubectl exec")
    }

    /// `GET path` on `address` inside the node's network namespace (the
    /// agent's metrics listener on the node's loopback): status and body.
    ///
    /// # Errors
    /// When nothing answers.
    pub fn http_get(&self, address: SocketAddr, path: &str) -> Result<(u16, String), String> {
        let path = path.to_owned();
        std::thread::spawn(move || {
            enter_netns(&Path::new("/run/netns").join(NODE_NETNS));
            let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))
                .map_err(|e| format!("connect {address}: {e}"))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .map_err(|e| e.to_string())?;
            let mut response = String::new();
            stream
                .read_to_string(&mut response)
                .map_err(|e| e.to_string())?;
            let (head, body) = response.split_once("\r\n\r\n").ok_or("not HTTP")?;
            let code = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or("no status code")?;
            Ok((code, body.to_owned()))
        })
        .join()
        .expect("http thread")
    }

    /// The directory pods mount the traffic tool from; `ipm-flows` is
    /// copied there from `binary`.
    pub fn install_tools(&self, binary: &Path) -> PathBuf {
        let dir = self.layout().run().join("tools");
        std::fs::create_dir_all(&dir).expect("tools dir");
        // Copy, not link: the build may replace the binary while pods run.
        let target = dir.join("ipm-flows");
        let partial = dir.join("ipm-flows.partial");
        std::fs::copy(binary, &partial).expect("copy ipm-flows");
        std::fs::rename(&partial, &target).expect("install ipm-flows");
        dir
    }
}

/// A pod (JSON) that runs `command` (the traffic tool is at
/// `/opt/ipm/ipm-flows`) in the default namespace, on the CNI bridge or
/// in the node's network namespace.
pub fn tool_pod(name: &str, tools: &Path, command: &[&str], host_network: bool) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name, "ipm-test": "true"}},
        "spec": {
            "hostNetwork": host_network,
            "terminationGracePeriodSeconds": 1,
            "restartPolicy": "Never",
            "containers": [{
                "name": "tool",
                "image": TOOL_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": command,
                "volumeMounts": [{"name": "tools", "mountPath": TOOLS_MOUNT, "readOnly": true}],
            }],
            "volumes": [{"name": "tools", "hostPath": {"path": tools, "type": "Directory"}}],
        },
    })
}

/// A small command line for the path to the traffic tool inside pods.
pub fn flows() -> String {
    format!("{TOOLS_MOUNT}/ipm-flows")
}

/// Runs `f` on a thread inside the external namespace: clients there
/// play hosts outside the cluster.
pub fn in_external<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        enter_netns(&Path::new("/run/netns").join(super::EXTERNAL_NETNS));
        f()
    })
    .join()
    .expect("thread in the external namespace")
}

/// One connection from the current thread's namespace: the source address
/// the server reported.
pub fn observed_source(target: SocketAddr) -> Result<String, String> {
    let mut stream = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3))
        .map_err(|e| format!("connect {target}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| format!("read {target}: {e}"))?;
    Ok(reply.trim().to_owned())
}
