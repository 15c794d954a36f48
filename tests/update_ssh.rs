//! Containers updated over SSH, against a real OpenSSH server on loopback:
//! through their node (`pct exec`), behind a snapshot, with the host key
//! pinned; an unknown host key is refused before anything runs.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use homelab_operator::{
    api::{MonitorTarget, ProxmoxGuest, ProxyHost, SecretKeyRef, UpdatePolicy, UpdatePolicyStatus, UpdateResult},
    cli::oneshot::{Engine, Files},
    config::{Config, SecretString},
    metrics::Metrics,
    reconcile::{
        ReconcileError,
        kind::{Lookup, SecretValue},
    },
    sim::{
        SimServer,
        pve::{PveSim, PveSimConfig, SimGuest, endpoint_for},
    },
};
use serde_json::json;

mod support {
    pub mod debian;
    pub mod sshd;
}

/// The files' resources plus the Secrets the controller would read from the API server.
struct WithSecrets {
    files: Files,
    secrets: BTreeMap<String, String>,
}

type Found<'a, T> = BoxFuture<'a, Result<T, ReconcileError>>;

impl Lookup for WithSecrets {
    fn guest<'a>(&'a self, ns: &'a str, name: &'a str) -> Found<'a, Option<ProxmoxGuest>> {
        self.files.guest(ns, name)
    }
    fn guests<'a>(&'a self, ns: &'a str) -> Found<'a, Vec<ProxmoxGuest>> {
        Lookup::guests(&self.files, ns)
    }
    fn proxy_host<'a>(&'a self, ns: &'a str, name: &'a str) -> Found<'a, Option<ProxyHost>> {
        self.files.proxy_host(ns, name)
    }
    fn monitors<'a>(&'a self, ns: &'a str) -> Found<'a, Vec<MonitorTarget>> {
        self.files.monitors(ns)
    }
    fn secret<'a>(&'a self, _ns: &'a str, key: &'a SecretKeyRef) -> Found<'a, SecretValue> {
        let v = match self.secrets.get(&format!("{}/{}", key.name, key.key)) {
            Some(v) => SecretValue::Found(SecretString::new(v.clone())),
            None => SecretValue::Missing(format!("Secret {} not found", key.name)),
        };
        Box::pin(async move { Ok(v) })
    }
}

struct World {
    sim: Arc<PveSim>,
    engine: Engine,
    _server: SimServer,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let sim = PveSim::with_defaults(PveSimConfig {
        task_duration: Duration::ZERO,
        ..Default::default()
    })
    .unwrap();
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        proxmox: [("default".to_string(), endpoint_for("default", &sim, &server, dir.path()).unwrap())].into(),
        ..Default::default()
    };
    World {
        engine: Engine::new(&config, Arc::new(Metrics::default())).unwrap(),
        sim,
        _server: server,
        _dir: dir,
    }
}

fn container(w: &World, vmid: u32) -> ProxmoxGuest {
    let config = [("hostname", json!("pihole")), ("memory", json!(512))]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut g = SimGuest::new(vmid, "lxc", "pve1", config, false);
    g.running = true;
    w.sim.add_guest(g);
    serde_json::from_value(json!({
        "apiVersion": "homelab.dev/v1alpha1", "kind": "ProxmoxGuest",
        "metadata": {"name": "pihole", "namespace": "homelab", "labels": {"updates": "weekly"}},
        "spec": {"type": "lxc", "memoryMiB": 512, "source": {"osTemplate": "local:vztmpl/x.tar.zst"}, "adopt": true, "vmid": vmid,
                 "disks": [{"slot": "rootfs", "storage": "local-lvm", "sizeGiB": 8}]},
        "status": {"vmid": vmid, "node": "pve1", "ips": ["127.0.0.1"]},
    }))
    .unwrap()
}

fn policy(sshd: &support::sshd::Sshd) -> UpdatePolicy {
    serde_json::from_value(json!({
        "apiVersion": "homelab.dev/v1alpha1", "kind": "UpdatePolicy",
        "metadata": {"name": "weekly", "namespace": "homelab", "annotations": {"homelab.dev/update-now": "1"}},
        "spec": {
            "selector": {"matchLabels": {"updates": "weekly"}}, "mode": "Apply", "validation": {"timeoutSeconds": 5},
            "ssh": {"user": sshd.user, "port": sshd.port, "nodes": {"pve1": "127.0.0.1"},
                    "privateKeySecret": {"name": "ssh", "key": "id_ed25519"},
                    "knownHostsSecret": {"name": "ssh", "key": "known_hosts"}},
        },
    }))
    .unwrap()
}

fn lookup(guest: &ProxmoxGuest, key: &str, known_hosts: &str) -> WithSecrets {
    WithSecrets {
        files: Files::new(std::slice::from_ref(guest), &[]),
        secrets: [
            ("ssh/id_ed25519".to_string(), key.to_string()),
            ("ssh/known_hosts".to_string(), known_hosts.to_string()),
        ]
        .into(),
    }
}

fn run_of(s: &UpdatePolicyStatus) -> homelab_operator::api::MemberRun {
    s.members[0].last_run.clone().unwrap()
}

#[tokio::test]
async fn a_container_is_updated_through_its_node_over_real_ssh() {
    let sshd = support::sshd::start();
    let w = world().await;
    let g = container(&w, 601);
    let out = w
        .engine
        .apply(
            &policy(&sshd),
            &lookup(&g, &sshd.client_key, &sshd.known_hosts),
            Duration::from_secs(120),
            &|_| {},
        )
        .await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let m = &out.status.members[0];
    let r = run_of(&out.status);
    assert_eq!(r.result, Some(UpdateResult::Updated), "{r:?}");
    assert_eq!(m.package_manager.as_deref(), Some("apt"));
    assert_eq!((m.pending, r.packages_changed), (0, 2), "{m:?}");
    assert!(r.output.iter().any(|l| l == "Setting up openssl"), "{:?}", r.output);
    assert!(r.rebooted, "the stand-in left reboot-required: rebooted through Proxmox");
    assert_eq!(sshd.upgrades(), 1, "the update ran once");
    assert!(sshd.pct_vmids().iter().all(|v| v == "601") && !sshd.pct_vmids().is_empty());
    let c = w.sim.guest(601).unwrap();
    assert_eq!(c.snapshots.len(), 1, "snapshotted before the update");
}

#[tokio::test]
async fn an_unknown_host_key_is_refused_before_anything_runs() {
    let sshd = support::sshd::start();
    let w = world().await;
    let g = container(&w, 602);
    let other = sshd.known_hosts.replace("[127.0.0.1]", "[127.0.0.2]");
    let out = w
        .engine
        .apply(
            &policy(&sshd),
            &lookup(&g, &sshd.client_key, &other),
            Duration::from_secs(120),
            &|_| {},
        )
        .await;
    let r = run_of(&out.status);
    assert_eq!(r.result, Some(UpdateResult::Skipped));
    let reason = r.reason.unwrap_or_default();
    assert!(
        reason.contains("its host key SHA256:") && reason.contains("is not in spec.ssh.knownHostsSecret"),
        "{reason}"
    );
    assert!(sshd.pct_vmids().is_empty() && sshd.upgrades() == 0, "nothing ran");
    assert!(w.sim.guest(602).unwrap().snapshots.is_empty(), "no snapshot either");
}

#[tokio::test]
async fn a_missing_ssh_secret_stalls_the_policy_with_the_field() {
    let sshd = support::sshd::start();
    let w = world().await;
    let g = container(&w, 603);
    let mut l = lookup(&g, &sshd.client_key, &sshd.known_hosts);
    l.secrets.remove("ssh/known_hosts");
    let out = w.engine.apply(&policy(&sshd), &l, Duration::from_secs(30), &|_| {}).await;
    let e = out.error.unwrap_or_default();
    assert!(e.contains("spec.ssh.knownHostsSecret: Secret ssh not found"), "{e}");
}

#[tokio::test]
async fn a_container_can_be_reached_at_its_own_address() {
    let sshd = support::sshd::start();
    let w = world().await;
    let g = container(&w, 604);
    let mut p = policy(&sshd);
    p.spec.ssh.as_mut().unwrap().via = homelab_operator::api::SshVia::Guest;
    let out = w
        .engine
        .apply(
            &p,
            &lookup(&g, &sshd.client_key, &sshd.known_hosts),
            Duration::from_secs(120),
            &|_| {},
        )
        .await;
    assert_eq!(run_of(&out.status).result, Some(UpdateResult::Updated), "{:?}", out.status.members);
    assert!(sshd.pct_vmids().is_empty(), "no pct: straight to the container");
    assert_eq!(sshd.upgrades(), 1);
}
