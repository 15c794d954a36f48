//! The envtest tier's shared world: the simulators each test talks to, the
//! operator as a child process, and the waits on conditions.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, OnceLock},
    time::Duration,
};

use super::envtest::{ControlPlane, control_plane};
use homelab_operator::{
    api::{self, ProxmoxGuest},
    sim::{
        SimServer,
        npm::NpmSim,
        pbs::{PbsSim, PbsSimConfig},
        pve::{PveSim, PveSimConfig, config_section},
        technitium::TechnitiumSim,
    },
};
use kube::{Api, Client, api::PostParams};
use serde_json::json;

pub const LIMIT: Duration = Duration::from_secs(120);

/// The README's install commands, run once per test binary, exactly as written there.
pub fn installed() -> &'static ControlPlane {
    static DONE: OnceLock<()> = OnceLock::new();
    let plane = control_plane();
    DONE.get_or_init(|| {
        let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
        for cmd in [
            "kubectl apply --server-side -f crds/",
            "kubectl apply --server-side -k manifests/install",
        ] {
            assert!(readme.contains(cmd), "README no longer says {cmd:?}");
            let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
            let (ok, out) = plane.kubectl(&args);
            assert!(ok, "{cmd}: {out}");
        }
        // ArgoCD's health scripts, merged by the README's command into the
        // argocd-cm an ArgoCD install has.
        let patch = "kubectl -n argocd patch configmap argocd-cm --patch-file manifests/argocd/argocd-cm-patch.yaml";
        assert!(readme.contains(patch), "README no longer says {patch:?}");
        for args in [
            &["create", "namespace", "argocd"][..],
            &["-n", "argocd", "create", "configmap", "argocd-cm"],
        ] {
            let (ok, out) = plane.kubectl(args);
            assert!(ok, "{out}");
        }
        let (ok, out) = plane.kubectl(&patch.split_whitespace().skip(1).collect::<Vec<_>>());
        assert!(ok, "{patch}: {out}");
        let (ok, out) = plane.kubectl(&["-n", "argocd", "get", "configmap", "argocd-cm", "-o", "yaml"]);
        for kind in ["ProxmoxGuest", "DnsRecord", "ProxyHost"] {
            assert!(
                ok && out.contains(&format!("resource.customizations.health.homelab.dev_{kind}")),
                "{out}"
            );
        }
        // Established before anyone creates a resource.
        let (ok, out) = plane.kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"]);
        assert!(ok, "{out}");
    });
    plane
}

pub async fn namespace(client: &Client, name: &str) -> String {
    let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    name.to_string()
}

pub struct World {
    pub sim: Arc<PveSim>,
    /// The backup server behind PVE storage `pbs1` (datastore `store1`, endpoint `main`).
    pub pbs: Arc<PbsSim>,
    /// Telegram, Discord, Slack, ntfy and a webhook, as channels of the same names.
    pub chat: Arc<homelab_operator::sim::notify::NotifySim>,
    pub dns: Arc<TechnitiumSim>,
    pub npm: Arc<NpmSim>,
    pub _servers: Vec<SimServer>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

pub async fn world(task_duration: Duration) -> World {
    let sim = PveSim::with_defaults(PveSimConfig {
        task_duration,
        ..Default::default()
    })
    .unwrap();
    let server = sim.serve().await.unwrap();
    let pbs = PbsSim::new(PbsSimConfig {
        task_duration,
        ..Default::default()
    })
    .unwrap();
    sim.attach_pbs("pbs1", pbs.clone(), "store1");
    let pbs_server = pbs.serve().await.unwrap();
    let chat = homelab_operator::sim::notify::NotifySim::new(Default::default());
    let chat_server = chat.serve().await.unwrap();
    // DNS and reverse proxy for the children `spec.dns` / `spec.proxy` make.
    let dns = TechnitiumSim::new("dns-token-1", &["home.arpa"]).unwrap();
    let dns_server = dns.serve().await.unwrap();
    let npm = NpmSim::new("operator@home.arpa", "npm-secret-1").unwrap();
    let npm_server = npm.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, content: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    };
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "{}{}{}dns:\n  default:\n    type: technitium\n    url: {}\n    tokenFile: {}\n\
             proxy:\n  default:\n    type: nginx-proxy-manager\n    url: {}\n    identity: operator@home.arpa\n    secretFile: {}\n",
            config_section(&sim, &server, dir.path()).unwrap(),
            homelab_operator::sim::pbs::config_section("main", &pbs, &pbs_server, dir.path()).unwrap(),
            homelab_operator::sim::notify::config_section(&chat, &chat_server, dir.path()).unwrap(),
            dns_server.url,
            file("dns-token", "dns-token-1"),
            npm_server.url,
            file("npm-secret", "npm-secret-1"),
        ),
    )
    .unwrap();
    World {
        sim,
        pbs,
        chat,
        dns,
        npm,
        _servers: vec![server, pbs_server, chat_server, dns_server, npm_server],
        dir,
        config,
    }
}

/// `homelab-operator run` as a child process; killed when dropped.
pub struct Operator {
    pub child: Child,
    pub log: PathBuf,
    pub metrics_port: u16,
}

impl Operator {
    pub fn start(plane: &ControlPlane, w: &World, ns: &str, extra: &[&str], name: &str) -> Operator {
        let log = w.dir.path().join(format!("{name}.log"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // Drift checks every second, unless the test needs the requeues out of the way.
        let drift: &[&str] = if extra.contains(&"--drift-interval") {
            &[]
        } else {
            &["--drift-interval", "1"]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_homelab-operator"))
            .args(["run", "--config"])
            .arg(&w.config)
            .args(["--namespace", ns, "--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(drift)
            .args(extra)
            .env("KUBECONFIG", &plane.operator_kubeconfig)
            .env("POD_NAME", name)
            .env("RUST_LOG", "info,homelab_operator=debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap();
        Operator {
            child,
            log,
            metrics_port: port,
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        reqwest::get(url).await.unwrap().text().await.unwrap()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn lxc(name: &str, extra: serde_json::Value) -> ProxmoxGuest {
    let mut v = json!({
        "apiVersion": "homelab.dev/v1alpha1", "kind": "ProxmoxGuest",
        "metadata": {"name": name},
        "spec": {
            "type": "lxc",
            "source": {"osTemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"},
            "memoryMiB": 512, "cpu": {"cores": 1},
            "disks": [{"slot": "rootfs", "storage": "local-lvm", "sizeGiB": 8}],
            "network": [{"slot": "net0", "bridge": "vmbr0", "ipv4": "dhcp"}],
            "deletionPolicy": "Delete"
        }
    });
    for (k, val) in extra.as_object().unwrap() {
        v["spec"][k] = val.clone();
    }
    serde_json::from_value(v).unwrap()
}

pub fn condition(g: &ProxmoxGuest, t: &str) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    g.status.as_ref().and_then(|s| api::find_condition(&s.conditions, t).cloned())
}

pub fn is_true(g: &ProxmoxGuest, t: &str) -> bool {
    condition(g, t).is_some_and(|c| c.status == "True" && c.observed_generation == g.metadata.generation)
}

/// Poll the object until `done` holds (or LIMIT ends a hang).
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, op: &Operator, done: impl Fn(&K) -> bool) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let last = api.get_opt(name).await.unwrap();
        if let Some(g) = &last
            && done(g)
        {
            return g.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: not {what}; last seen: {last:?}\noperator log:\n{}\ncontrol plane logs in {}",
            op.logs(),
            control_plane().dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn wait_gone(api: &Api<ProxmoxGuest>, name: &str, op: &Operator) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while api.get_opt(name).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: finalizer not released; log:\n{}",
            op.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn sim_config(w: &World, vmid: u32, key: &str) -> String {
    w.sim.guest(vmid).and_then(|g| g.get(key)).unwrap_or_default()
}
