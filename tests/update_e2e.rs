//! UpdatePolicy end to end over HTTPS to the PVE simulator: guests updated
//! through their agents behind a snapshot, validated by their monitors'
//! checks against stand-in services, rolled back when one stays Down.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use homelab_operator::{
    api::{MonitorTarget, ProxmoxGuest, UpdatePolicy, UpdatePolicyStatus, UpdateResult, UpdateStep},
    cli::oneshot::{Engine, Files},
    config::Config,
    metrics::Metrics,
    reconcile::{StatusSink, kind::Kind},
    sim::{
        SimServer,
        notify::NotifySim,
        pve::{PveSim, PveSimConfig, SimGuest, endpoint_for, stand_in_web_server},
    },
};
use serde_json::json;

mod support {
    pub mod pve_permissions;
}

struct World {
    sim: Arc<PveSim>,
    engine: Engine,
    chat: Arc<NotifySim>,
    _servers: Vec<SimServer>,
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
    let chat = NotifySim::new(Default::default());
    let chat_server = chat.serve().await.unwrap();
    let section = homelab_operator::sim::notify::config_section(&chat, &chat_server, dir.path()).unwrap();
    let mut config = Config::parse("(test)", &section).unwrap();
    config.proxmox = [("default".to_string(), endpoint_for("default", &sim, &server, dir.path()).unwrap())].into();
    let engine = Engine::new(&config, Arc::new(Metrics::default())).unwrap();
    World {
        sim,
        engine,
        chat,
        _servers: vec![server, chat_server],
        _dir: dir,
    }
}

/// A running QEMU guest with its agent, its ProxmoxGuest (labelled for the
/// policy) and a MonitorTarget on a stand-in of its web service.
async fn guest(w: &World, vmid: u32, name: &str) -> (ProxmoxGuest, MonitorTarget) {
    let config: BTreeMap<String, serde_json::Value> = [
        ("name", json!(name)),
        ("agent", json!("1")),
        ("memory", json!("1024")),
        ("net0", json!(format!("virtio=BC:24:11:00:{:02X}:01,bridge=vmbr0", vmid % 256))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut g = SimGuest::new(vmid, "qemu", "pve1", config, false);
    g.running = true;
    w.sim.add_guest(g);
    let addr = stand_in_web_server(w.sim.clone(), vmid, std::net::Ipv4Addr::LOCALHOST.into())
        .await
        .unwrap();
    let pxg: ProxmoxGuest = serde_json::from_value(json!({
        "apiVersion": "homelab.dev/v1alpha1", "kind": "ProxmoxGuest",
        "metadata": {"name": name, "namespace": "homelab", "labels": {"updates": "weekly"}},
        "spec": {"type": "qemu", "memoryMiB": 1024, "source": {"clone": {"templateName": "debian-13-cloud"}}, "adopt": true, "vmid": vmid},
        "status": {"vmid": vmid, "node": "pve1"},
    }))
    .unwrap();
    let mon: MonitorTarget = serde_json::from_value(json!({
        "apiVersion": "homelab.dev/v1alpha1", "kind": "MonitorTarget",
        "metadata": {"name": format!("{name}-http"), "namespace": "homelab"},
        "spec": {"target": {"kind": "ProxmoxGuest", "name": name}, "http": {"url": format!("http://{addr}/")}},
    }))
    .unwrap();
    (pxg, mon)
}

fn policy(extra: serde_json::Value) -> UpdatePolicy {
    let mut spec = json!({
        "selector": {"matchLabels": {"updates": "weekly"}},
        "mode": "Apply",
        "stopOnFailure": false,
        "validation": {"timeoutSeconds": 5},
        "notify": ["telegram"],
    });
    spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "apiVersion": "homelab.dev/v1alpha1", "kind": "UpdatePolicy",
        "metadata": {"name": "weekly", "namespace": "homelab", "annotations": {"homelab.dev/update-now": "1"}, "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}

fn files(members: &[(ProxmoxGuest, MonitorTarget)]) -> Files {
    let guests: Vec<ProxmoxGuest> = members.iter().map(|(g, _)| g.clone()).collect();
    Files::new(&guests, &[]).with_monitors(members.iter().map(|(_, m)| m.clone()).collect())
}

fn member<'a>(s: &'a UpdatePolicyStatus, name: &str) -> &'a homelab_operator::api::UpdateMember {
    s.members.iter().find(|m| m.name == name).unwrap()
}

fn result(s: &UpdatePolicyStatus, name: &str) -> Option<UpdateResult> {
    member(s, name).last_run.as_ref().and_then(|r| r.result)
}

#[tokio::test]
async fn a_breaking_update_is_rolled_back_and_a_good_one_kept_with_one_notification() {
    let w = world().await;
    let a = guest(&w, 301, "app1").await;
    let b = guest(&w, 302, "app2").await;
    w.sim.edit_os(302, |os| os.update_breaks_service = true);
    let p = policy(json!({}));
    let out = w.engine.apply(&p, &files(&[a, b]), Duration::from_secs(120), &|_| {}).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let s = out.status;

    assert_eq!(result(&s, "app1"), Some(UpdateResult::Updated), "{:?}", member(&s, "app1"));
    let app1 = w.sim.guest(301).unwrap();
    assert!(app1.os.pending.is_empty() && app1.os.service_ok && app1.running);
    assert_eq!(member(&s, "app1").pending, 0);
    assert_eq!(member(&s, "app1").last_run.as_ref().unwrap().packages_changed, 3);

    let run2 = member(&s, "app2").last_run.clone().unwrap();
    assert_eq!(run2.result, Some(UpdateResult::RolledBack), "{run2:?}");
    assert!(run2.rolled_back);
    let reason = run2.reason.unwrap_or_default();
    assert!(reason.contains("validation") && reason.contains("app2-http is Down"), "{reason}");
    let app2 = w.sim.guest(302).unwrap();
    assert_eq!(app2.os.pending.len(), 3, "back at the snapshot's packages");
    assert!(app2.os.service_ok && app2.running, "the rollback started the guest, serving again");
    assert_eq!(app2.os.updates_run, 1);

    // Both snapshots taken before the updates, kept for a day (keepSnapshot default).
    for vmid in [301, 302] {
        let g = w.sim.guest(vmid).unwrap();
        assert_eq!(
            g.snapshots.keys().filter(|n| n.starts_with("homelab-upd-")).count(),
            1,
            "{vmid}: {:?}",
            g.snapshots.keys()
        );
    }
    assert_eq!(s.snapshots.len(), 2);

    let degraded = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.status, "True");
    assert!(
        degraded.message.starts_with("app2: validation: MonitorTarget app2-http is Down"),
        "{}",
        degraded.message
    );
    assert_eq!(s.last_result.as_deref(), Some("1 updated, 1 rolled back"));

    let told = w.chat.received();
    assert_eq!(told.len(), 1, "one notification per run: {told:?}");
    assert!(
        told[0].text.contains("1 updated, 1 rolled back") && told[0].text.contains("app2"),
        "{}",
        told[0].text
    );
}

#[tokio::test]
async fn no_update_without_a_snapshot_and_a_failure_stops_the_rest() {
    let w = world().await;
    let a = guest(&w, 311, "a-locked-down").await;
    let b = guest(&w, 312, "b-breaks").await;
    let c = guest(&w, 313, "c-fine").await;
    w.sim.edit_os(311, |os| os.exec_allowed = false);
    w.sim.edit_os(312, |os| os.update_exit = 100);
    let p = policy(json!({"stopOnFailure": true, "keepSnapshot": "0h"}));
    let out = w.engine.apply(&p, &files(&[a, b, c]), Duration::from_secs(120), &|_| {}).await;
    let s = out.status;

    let r = member(&s, "a-locked-down").last_run.clone().unwrap();
    assert_eq!(r.result, Some(UpdateResult::Skipped));
    let reason = r.reason.unwrap();
    assert!(
        reason.starts_with("preflight: ") && reason.contains("Command guest-exec has been disabled"),
        "{reason}"
    );
    assert!(
        w.sim.guest(311).unwrap().snapshots.is_empty(),
        "preflight failed: no snapshot, nothing changed"
    );

    let r = member(&s, "b-breaks").last_run.clone().unwrap();
    assert_eq!(r.result, Some(UpdateResult::RolledBack), "{r:?}");
    assert!(r.reason.unwrap().starts_with("update: exited 100"));
    assert!(r.output.iter().any(|l| l.contains("dpkg returned an error code")), "{:?}", r.output);

    let r = member(&s, "c-fine").last_run.clone().unwrap();
    assert_eq!(r.result, Some(UpdateResult::Skipped));
    assert_eq!(r.reason.as_deref(), Some("stopped: the update of b-breaks failed"));
    assert_eq!(w.sim.guest(313).unwrap().os.updates_run, 0);

    // keepSnapshot 0h: the operator's snapshots are gone once the run ended.
    assert!(s.snapshots.is_empty(), "{:?}", s.snapshots);
    assert!(w.sim.guest(312).unwrap().snapshots.is_empty());
}

#[tokio::test]
async fn check_mode_only_reads_what_is_pending() {
    let w = world().await;
    let a = guest(&w, 321, "app1").await;
    let p = policy(json!({"mode": "Check"}));
    let out = w.engine.apply(&p, &files(&[a]), Duration::from_secs(60), &|_| {}).await;
    let s = out.status;
    let m = member(&s, "app1");
    assert_eq!(result(&s, "app1"), Some(UpdateResult::Checked));
    assert_eq!((m.pending, m.security), (3, Some(2)));
    assert_eq!(m.packages, ["curl", "libssl3t64", "openssl"]);
    assert_eq!(m.package_manager.as_deref(), Some("apt"));
    let g = w.sim.guest(321).unwrap();
    assert!(g.snapshots.is_empty() && g.os.updates_run == 0);
    assert_eq!(s.pending, 3);
    let writes: u64 = w
        .sim
        .calls()
        .iter()
        .filter(|(k, _)| !k.starts_with("GET") && !k.contains("/agent/exec"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(writes, 0, "a check changes nothing: {:?}", w.sim.calls());
}

/// Every status saved, in order: what an operator killed at any moment had left.
#[derive(Default)]
struct Recording(std::sync::Mutex<Vec<UpdatePolicyStatus>>);

impl StatusSink<UpdatePolicyStatus> for Recording {
    fn save<'a>(&'a self, s: &'a UpdatePolicyStatus) -> BoxFuture<'a, Result<(), String>> {
        self.0.lock().unwrap().push(s.clone());
        Box::pin(async { Ok(()) })
    }
}

/// The operator dies right after saving "about to launch the update" (kill -9
/// before the launch's answer was saved): the next operator launches again,
/// and the guest runs the update once; one snapshot, kept as usual.
#[tokio::test]
async fn a_restart_between_saving_and_launching_does_not_update_twice() {
    let w = world().await;
    let a = guest(&w, 331, "app1").await;
    let f = files(&[a]);
    let mut p = policy(json!({}));
    let env = w.engine.env();
    let saved = Recording::default();
    while p.status.as_ref().and_then(|s| s.run.as_ref()).is_none_or(|r| r.finished.is_none()) {
        let inputs = p.resolve(env, &f).await.unwrap();
        let out = p.reconcile(env, inputs, &saved).await.unwrap();
        p.status = Some(out.status);
    }
    assert_eq!(result(p.status.as_ref().unwrap(), "app1"), Some(UpdateResult::Updated));
    let before_launch = saved
        .0
        .lock()
        .unwrap()
        .iter()
        .rfind(|s| {
            s.members[0]
                .last_run
                .as_ref()
                .is_some_and(|r| r.step == UpdateStep::Update && !r.launched)
        })
        .cloned()
        .expect("the step was saved before the launch");
    p.status = Some(before_launch);
    let out = w.engine.apply(&p, &f, Duration::from_secs(60), &|_| {}).await;
    assert_eq!(result(&out.status, "app1"), Some(UpdateResult::Updated), "{:?}", out.status.members);
    let g = w.sim.guest(331).unwrap();
    assert_eq!(g.os.updates_run, 1, "the update ran once");
    assert_eq!(g.snapshots.len(), 1, "one snapshot");
}

#[tokio::test]
async fn the_readme_role_grants_every_call_an_update_makes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let prefix = "pveum role add HomelabUpdates -privs ";
    let line = readme
        .lines()
        .find(|l| l.starts_with(prefix))
        .expect("README's HomelabUpdates role");
    let privs: std::collections::BTreeSet<String> = line.split('"').nth(1).unwrap().split_whitespace().map(str::to_string).collect();
    let w = world().await;
    let a = guest(&w, 341, "app1").await;
    let b = guest(&w, 342, "app2").await;
    w.sim.edit_os(342, |os| os.update_needs_reboot = true);
    w.sim.edit_os(341, |os| os.update_breaks_service = true);
    let p = policy(json!({"keepSnapshot": "0h"}));
    let out = w.engine.apply(&p, &files(&[a, b]), Duration::from_secs(120), &|_| {}).await;
    assert_eq!(result(&out.status, "app1"), Some(UpdateResult::RolledBack));
    assert!(member(&out.status, "app2").last_run.as_ref().unwrap().rebooted);
    let calls: Vec<String> = w.sim.calls().into_keys().collect();
    for wanted in [
        "POST /nodes/{node}/qemu/{vmid}/agent/exec",
        "POST /nodes/{node}/qemu/{vmid}/snapshot",
        "POST /nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback",
        "DELETE /nodes/{node}/qemu/{vmid}/snapshot/{snapname}",
        "POST /nodes/{node}/qemu/{vmid}/status/reboot",
    ] {
        assert!(calls.contains(&wanted.to_string()), "{wanted} not exercised: {calls:?}");
    }
    let subset: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("tests/data/pve-api-subset.json")).unwrap()).unwrap();
    let unmet = support::pve_permissions::unmet(&subset, &calls, &privs);
    assert!(unmet.is_empty(), "the README's HomelabUpdates role lacks:\n{}", unmet.join("\n"));
}
