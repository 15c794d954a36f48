//! ProxmoxGuest end to end through the reconciler, over HTTPS to the simulator.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use homelab_operator::{
    api::{self, ProxmoxGuest},
    cli::oneshot::{Engine, Files, MemoryStatus},
    providers::pve::{self, GuestKind, Params, PveApi, PveClient, Upid},
    reconcile::ownership::Identity,
    reconcile::{
        cache::{ClusterCache, DriftClock},
        proxmox_guest::{self, GuestCtx, GuestObject},
    },
    sim::pve::{SimGuest, config_section},
};
use serde_json::json;

mod support {
    pub mod guest_world;
}

use support::guest_world::*;

/// Every example applied (four at once), each Ready without an error.
async fn converge_examples(w: &World, deadline: Duration) -> Vec<homelab_operator::cli::oneshot::Applied> {
    let results = w.engine.apply_all(&examples(), &Files::default(), 4, deadline, &|_| {}).await;
    for r in &results {
        assert!(
            r.error.is_none() && ready(&r.status),
            "{}: {:?} {:?}",
            r.name,
            r.error,
            r.status.conditions
        );
    }
    results
}

#[tokio::test]
async fn examples_converge_with_every_field_visible_in_proxmox() {
    let w = world().await;
    let results = converge_examples(&w, Duration::from_secs(30)).await;
    let web = results.iter().find(|r| r.name == "homelab/web01").unwrap();
    let g = w.sim.guest(web.status.vmid.unwrap()).unwrap();
    assert_eq!(g.node, "pve1");
    assert!(g.running);
    assert_eq!(cfg(&g, "cores"), "2");
    assert_eq!(cfg(&g, "memory"), "current=4096");
    assert_eq!(cfg(&g, "balloon"), "2048");
    assert_eq!(cfg(&g, "cpu"), "cputype=x86-64-v2-AES");
    assert!(
        cfg(&g, "net0").starts_with("virtio=BC:24:11:") && cfg(&g, "net0").contains("tag=10") && cfg(&g, "net0").contains("firewall=1")
    );
    assert_eq!(cfg(&g, "ipconfig0"), "ip=10.5.0.21/24,gw=10.5.0.1");
    assert_eq!(cfg(&g, "ciuser"), "debian");
    assert!(cfg(&g, "sshkeys").starts_with("ssh-ed25519%20AAAA"));
    assert!(cfg(&g, "scsi0").contains("size=32G") && cfg(&g, "scsi0").contains("discard=on") && cfg(&g, "scsi0").contains("ssd=1"));
    assert_eq!(cfg(&g, "onboot"), "1");
    assert_eq!(cfg(&g, "startup"), "order=2,up=30");
    assert!(cfg(&g, "tags").contains("web") && cfg(&g, "tags").contains("hlo-"));
    assert!(cfg(&g, "description").starts_with("Reverse proxy and static sites\nmanaged-by: homelab-operator homelab/web01"));
    assert_eq!(g.fw_rules.len(), 2);
    assert_eq!(g.fw_rules[0]["dport"], json!("22"));
    assert_eq!(web.status.ips, vec!["10.5.0.21"]);

    let ct = results.iter().find(|r| r.name == "homelab/jellyfin").unwrap();
    let c = w.sim.guest(ct.status.vmid.unwrap()).unwrap();
    assert!(c.node == "pve2" || c.node == "pve3", "placed on an allowed node");
    assert_eq!(c.kind, "lxc");
    assert_eq!(cfg(&c, "rootfs"), format!("local-lvm:subvol-{}-disk-0,size=16G", c.vmid));
    assert!(cfg(&c, "mp0").starts_with("tank:subvol-") && cfg(&c, "mp0").contains("mp=/var/lib/jellyfin"));
    assert_eq!(cfg(&c, "mp1"), "/srv/media,mp=/media,ro=1");
    assert!(cfg(&c, "net1").contains("bridge=vmbr1") && cfg(&c, "net1").contains("ip=dhcp") && cfg(&c, "net1").contains("name=storage0"));
    assert_eq!(cfg(&c, "features"), "nesting=1");
    assert_eq!(cfg(&c, "swap"), "1024");
    assert_eq!(c.fw_options["enable"], json!(1));
}

#[tokio::test]
async fn second_apply_writes_nothing_and_steady_state_costs_one_call() {
    let w = world().await;
    let g = example("jellyfin");
    let first = apply(&w, &g).await;
    assert!(ready(&first.status));
    w.sim.reset_calls();
    let mut again = g.clone();
    again.status = Some(first.status.clone());
    let second = apply(&w, &again).await;
    assert!(ready(&second.status));
    assert!(
        w.sim.calls().keys().all(|k| k.starts_with("GET ")),
        "only reads: {:?}",
        w.sim.calls()
    );

    // Steady state with the drift check not due: one bulk call, nothing per guest.
    let engine = Engine::new(&w.config, w.metrics.clone()).unwrap();
    engine.drift.mark_read(&Identity::of(&g).uid);
    w.sim.reset_calls();
    let mut settled = g.clone();
    settled.status = Some(second.status);
    let third = engine.apply(&settled, &Files::default(), Duration::from_secs(10), &|_| {}).await;
    assert!(ready(&third.status));
    assert_eq!(w.sim.calls(), [("GET /cluster/resources".to_string(), 1)].into());
}

#[tokio::test]
async fn spec_edits_converge_and_drift_is_corrected() {
    let w = world().await;
    let mut g = example("jellyfin");
    let first = apply(&w, &g).await;
    let vmid = first.status.vmid.unwrap();

    // Hot change on a running container.
    g.spec.memory_mib = 8192;
    g.spec.disks[0].size_gib = 20;
    g.status = Some(first.status);
    let second = apply(&w, &g).await;
    assert!(ready(&second.status), "{:?}", second.status.conditions);
    let c = w.sim.guest(vmid).unwrap();
    assert_eq!(cfg(&c, "memory"), "8192");
    assert!(cfg(&c, "rootfs").ends_with("size=20G"));
    let mac_before = cfg(&c, "net0");

    // Someone edits the guest in the Proxmox UI.
    w.sim.edit_config(vmid, "cores", json!(1));
    w.sim
        .edit_config(vmid, "net0", json!(mac_before.replace("bridge=vmbr0", "bridge=vmbr1")));
    g.status = Some(second.status);
    let lines = Arc::new(std::sync::Mutex::new(vec![]));
    let l = lines.clone();
    let third = w
        .engine
        .apply(&g, &Files::default(), Duration::from_secs(10), &move |s| {
            l.lock().unwrap().push(s.to_string())
        })
        .await;
    assert!(ready(&third.status));
    let c = w.sim.guest(vmid).unwrap();
    assert_eq!(cfg(&c, "cores"), "4");
    let props = |s: &str| homelab_operator::reconcile::proxmox_guest::desired::normalized_props(s, "name");
    assert_eq!(props(&cfg(&c, "net0")), props(&mac_before), "NIC restored with the same MAC");
    assert!(
        lines.lock().unwrap().iter().any(|l| l.contains("changed outside the operator")),
        "{:?}",
        lines.lock().unwrap()
    );
}

#[tokio::test]
async fn reboot_changes_wait_or_reboot_by_policy() {
    let w = world().await;
    let mut g = example("web01");
    g.spec.update_policy = api::ConfigUpdatePolicy::Manual;
    g.spec.safety = None;
    let first = apply(&w, &g).await;
    let vmid = first.status.vmid.unwrap();
    g.spec.cpu.cores = 4;
    g.status = Some(first.status);
    let second = apply(&w, &g).await;
    assert_eq!(second.status.pending_changes.len(), 1);
    assert_eq!(second.status.pending_changes[0].field, "cores");
    assert_eq!(second.status.pending_changes[0].class, api::ChangeClass::NeedsReboot);
    assert_eq!(
        api::find_condition(&second.status.conditions, "Ready").unwrap().reason,
        "PendingReboot"
    );
    assert_eq!(cfg(&w.sim.guest(vmid).unwrap(), "cores"), "2", "not applied while running");

    g.spec.update_policy = api::ConfigUpdatePolicy::RebootIfNeeded;
    g.spec.safety = Some(api::Safety {
        snapshot_before_change: true,
    });
    g.metadata.generation = Some(2);
    g.status = Some(second.status);
    let third = apply(&w, &g).await;
    assert!(ready(&third.status), "{:?}", third.status.conditions);
    let sim_guest = w.sim.guest(vmid).unwrap();
    assert_eq!(cfg(&sim_guest, "cores"), "4", "applied by the reboot");
    assert!(
        third.status.last_snapshot.is_some() && !sim_guest.snapshots.is_empty(),
        "snapshot taken before the reboot"
    );
}

#[tokio::test]
async fn deletion_honours_the_policy() {
    let w = world().await;
    let ct = example("jellyfin"); // Retain
    let vm = example("web01"); // Delete
    let a = apply(&w, &ct).await;
    let b = apply(&w, &vm).await;
    let ev = delete(&w, &ct, a.status.clone()).await.unwrap();
    assert_eq!(ev, vec!["Retained"]);
    let kept = w.sim.guest(a.status.vmid.unwrap()).expect("retained");
    assert!(!cfg(&kept, "tags").contains("hlo-") && cfg(&kept, "tags").contains("media"));
    assert_eq!(cfg(&kept, "description").trim(), "Media server");

    delete(&w, &vm, b.status.clone()).await.unwrap();
    assert!(w.sim.guest(b.status.vmid.unwrap()).is_none(), "deleted with its disks");

    // Deleting again finds nothing of ours and does nothing.
    assert_eq!(delete(&w, &vm, b.status).await.unwrap(), vec!["Released"]);
}

#[tokio::test]
async fn protection_blocks_deletion_with_a_clear_message() {
    let w = world().await;
    let mut vm = example("web01");
    vm.spec.protection = true;
    let a = apply(&w, &vm).await;
    let msg = delete(&w, &vm, a.status.clone()).await.unwrap_err();
    assert!(msg.contains("set spec.protection: false"), "{msg}");
    assert!(w.sim.guest(a.status.vmid.unwrap()).is_some());
}

#[tokio::test]
async fn foreign_guests_are_untouched_unless_adopted() {
    let w = world().await;
    let mut config = std::collections::BTreeMap::new();
    config.insert("hostname".into(), json!("dns01"));
    config.insert("memory".into(), json!(256));
    config.insert("tags".into(), json!("dns"));
    config.insert("rootfs".into(), json!("local-lvm:subvol-300-disk-0,size=8G"));
    w.sim.add_guest(SimGuest::new(300, "lxc", "pve2", config, false));
    let mut g = example("jellyfin");
    g.spec.vmid = Some(300);
    g.spec.allowed_nodes.clear();
    g.spec.node = Some("pve2".into());
    let before = w.sim.guest(300).unwrap().config;
    let r = apply(&w, &g).await;
    let stalled = api::find_condition(&r.status.conditions, api::CONDITION_STALLED).unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "ForeignGuest"),
        "{stalled:?}"
    );
    assert_eq!(w.sim.guest(300).unwrap().config, before, "not a single write");
    assert_eq!(delete(&w, &g, r.status).await.unwrap(), vec!["Released"]);
    assert!(w.sim.guest(300).is_some());

    // A foreign guest with the same name is not a reason to touch it either.
    let mut same_name = example("jellyfin");
    same_name.metadata.name = Some("dns-new".into());
    same_name.spec.name = "dns01".into();
    let r = apply(&w, &same_name).await;
    assert!(ready(&r.status));
    assert_ne!(r.status.vmid, Some(300));
    assert_eq!(w.sim.guest(300).unwrap().config, before);

    g.spec.adopt = true;
    let r = apply(&w, &g).await;
    assert!(ready(&r.status), "{:?}", r.status.conditions);
    assert!(cfg(&w.sim.guest(300).unwrap(), "tags").contains("hlo-"), "adopted and marked");
}

#[tokio::test]
async fn permanent_errors_stall_with_a_message() {
    let w = world().await;
    let mut g = example("web01");
    g.spec.source.clone.as_mut().unwrap().template_name = Some("no-such-template".into());
    let r = apply(&w, &g).await;
    let c = api::find_condition(&r.status.conditions, api::CONDITION_STALLED).unwrap();
    assert_eq!(c.reason, "TemplateNotFound");
    assert!(c.message.contains("no qemu template named \"no-such-template\""), "{}", c.message);

    // A pool that does not exist: PVE's 403 is permanent; the VMID stays allocated.
    let mut ct = example("jellyfin");
    ct.spec.pool = Some("nope".into());
    let r = apply(&w, &ct).await;
    let e = r.error.unwrap();
    assert!(e.contains("Permission check failed (pool 'nope' does not exist)"), "{e}");
    assert!(r.status.vmid.is_some());
}

/// Crashes the process (from the reconciler's point of view) right after the
/// N-th outside call has reached the server.
struct KillAfter<'a> {
    inner: &'a PveClient,
    calls: AtomicUsize,
    at: usize,
}

impl KillAfter<'_> {
    fn check<T>(&self, r: Result<T, pve::Error>) -> Result<T, pve::Error> {
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            return Err(pve::Error::Credentials("killed".into()));
        }
        r
    }
}

impl PveApi for KillAfter<'_> {
    fn agent_boot_grace(&self) -> Duration {
        self.inner.agent_boot_grace()
    }
    async fn cluster_resources(&self) -> Result<Vec<pve::ClusterResource>, pve::Error> {
        self.check(self.inner.cluster_resources().await)
    }
    async fn nodes(&self) -> Result<Vec<pve::NodeInfo>, pve::Error> {
        self.check(self.inner.nodes().await)
    }
    async fn next_id(&self, w: Option<u32>) -> Result<u32, pve::Error> {
        self.check(self.inner.next_id(w).await)
    }
    async fn pending(&self, n: &str, k: GuestKind, v: u32) -> Result<Vec<pve::PendingEntry>, pve::Error> {
        self.check(self.inner.pending(n, k, v).await)
    }
    async fn create(&self, n: &str, k: GuestKind, p: Params) -> Result<Upid, pve::Error> {
        self.check(self.inner.create(n, k, p).await)
    }
    async fn clone_guest(&self, n: &str, k: GuestKind, t: u32, p: Params) -> Result<Upid, pve::Error> {
        self.check(self.inner.clone_guest(n, k, t, p).await)
    }
    async fn update_config(&self, n: &str, k: GuestKind, v: u32, p: Params) -> Result<Option<Upid>, pve::Error> {
        self.check(self.inner.update_config(n, k, v, p).await)
    }
    async fn resize(&self, n: &str, k: GuestKind, v: u32, d: &str, s: &str) -> Result<Option<Upid>, pve::Error> {
        self.check(self.inner.resize(n, k, v, d, s).await)
    }
    async fn power(&self, n: &str, k: GuestKind, v: u32, a: &str) -> Result<Upid, pve::Error> {
        self.check(self.inner.power(n, k, v, a).await)
    }
    async fn delete_guest(&self, n: &str, k: GuestKind, v: u32) -> Result<Upid, pve::Error> {
        self.check(self.inner.delete_guest(n, k, v).await)
    }
    async fn snapshot(&self, n: &str, k: GuestKind, v: u32, s: &str) -> Result<Upid, pve::Error> {
        self.check(self.inner.snapshot(n, k, v, s).await)
    }
    async fn rollback(&self, n: &str, k: GuestKind, v: u32, s: &str) -> Result<Upid, pve::Error> {
        self.check(self.inner.rollback(n, k, v, s).await)
    }
    async fn task_status(&self, u: &Upid) -> Result<pve::TaskStatus, pve::Error> {
        self.check(self.inner.task_status(u).await)
    }
    async fn firewall_options(&self, n: &str, k: GuestKind, v: u32) -> Result<pve::FirewallOptions, pve::Error> {
        self.check(self.inner.firewall_options(n, k, v).await)
    }
    async fn set_firewall_options(&self, n: &str, k: GuestKind, v: u32, p: Params) -> Result<(), pve::Error> {
        self.check(self.inner.set_firewall_options(n, k, v, p).await)
    }
    async fn firewall_rules(&self, n: &str, k: GuestKind, v: u32) -> Result<Vec<pve::FirewallRuleEntry>, pve::Error> {
        self.check(self.inner.firewall_rules(n, k, v).await)
    }
    async fn create_firewall_rule(&self, n: &str, k: GuestKind, v: u32, p: Params) -> Result<(), pve::Error> {
        self.check(self.inner.create_firewall_rule(n, k, v, p).await)
    }
    async fn delete_firewall_rule(&self, n: &str, k: GuestKind, v: u32, pos: u64) -> Result<(), pve::Error> {
        self.check(self.inner.delete_firewall_rule(n, k, v, pos).await)
    }
    async fn guest_interfaces(&self, n: &str, k: GuestKind, v: u32) -> Result<Vec<pve::GuestNic>, pve::Error> {
        self.check(self.inner.guest_interfaces(n, k, v).await)
    }
    async fn vzdump(&self, n: &str, p: Params) -> Result<Upid, pve::Error> {
        self.check(self.inner.vzdump(n, p).await)
    }
    async fn node_tasks(&self, n: &str, t: &str, since: u64) -> Result<Vec<pve::TaskListEntry>, pve::Error> {
        self.check(self.inner.node_tasks(n, t, since).await)
    }
    async fn task_log(&self, u: &Upid) -> Result<Vec<String>, pve::Error> {
        self.check(self.inner.task_log(u).await)
    }
    async fn not_backed_up(&self) -> Result<Vec<pve::UnprotectedGuest>, pve::Error> {
        self.check(self.inner.not_backed_up().await)
    }
    async fn backup_jobs(&self) -> Result<Vec<pve::BackupJob>, pve::Error> {
        self.check(self.inner.backup_jobs().await)
    }
    async fn create_backup_job(&self, p: Params) -> Result<(), pve::Error> {
        self.check(self.inner.create_backup_job(p).await)
    }
    async fn update_backup_job(&self, id: &str, p: Params) -> Result<(), pve::Error> {
        self.check(self.inner.update_backup_job(id, p).await)
    }
    async fn delete_backup_job(&self, id: &str) -> Result<(), pve::Error> {
        self.check(self.inner.delete_backup_job(id).await)
    }
    async fn node_storages(&self, n: &str) -> Result<Vec<pve::StorageInfo>, pve::Error> {
        self.check(self.inner.node_storages(n).await)
    }
    async fn storage_content(&self, n: &str, s: &str, c: Option<&str>) -> Result<Vec<pve::StorageVolume>, pve::Error> {
        self.check(self.inner.storage_content(n, s, c).await)
    }
    async fn node_bridges(&self, n: &str) -> Result<Vec<pve::NetworkInterface>, pve::Error> {
        self.check(self.inner.node_bridges(n).await)
    }
}

/// Reconcile until Ready (or give up), as a restarted operator would.
async fn run_until_ready<P: PveApi>(api: &P, g: &ProxmoxGuest, sink: &MemoryStatus) -> Result<(), String> {
    let cache = ClusterCache::new(Duration::from_millis(0));
    let drift = DriftClock::new(Duration::ZERO);
    let ctx = GuestCtx {
        api,
        cache: &cache,
        drift: &drift,
        cluster: "default",
        on_takedown: None,
    };
    let id = Identity::of(g);
    for _ in 0..1000 {
        let status = sink.0.lock().unwrap().clone();
        let out = match proxmox_guest::reconcile(
            &ctx,
            GuestObject {
                id: &id,
                spec: &g.spec,
                status,
                generation: Some(1),
                ci_password: None,
            },
            sink,
        )
        .await
        {
            Ok(out) => out,
            // The controller retries transient errors with backoff; so does this loop.
            Err(e) if e.is_transient() && !e.to_string().contains("killed") => {
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        *sink.0.lock().unwrap() = out.status.clone();
        if ready(&out.status) {
            return Ok(());
        }
    }
    Err("not ready".into())
}

#[tokio::test]
async fn restart_at_every_step_of_creation_never_duplicates_a_guest() {
    for name in ["web01", "jellyfin"] {
        let g = example(name);
        let mut at = 1;
        loop {
            let w = world().await;
            let client = &w.engine.providers.pve["default"];
            // Status is what the apiserver would have kept across the crash.
            let sink = MemoryStatus::default();
            let killer = KillAfter {
                inner: client,
                calls: AtomicUsize::new(0),
                at,
            };
            let first = run_until_ready(&killer, &g, &sink).await;
            let killed = killer.calls.load(Ordering::SeqCst) >= at;
            // Restart: fresh caches, same status.
            run_until_ready(client, &g, &sink)
                .await
                .unwrap_or_else(|e| panic!("{name}: after kill at call {at}: {e}"));
            let ours: Vec<_> = w.sim.guests().into_iter().filter(|s| cfg(s, "tags").contains("hlo-")).collect();
            assert_eq!(
                ours.len(),
                1,
                "{name}: kill at call {at}: {:?}",
                ours.iter().map(|g| g.vmid).collect::<Vec<_>>()
            );
            assert_eq!(w.sim.guests().len(), 1, "{name}: kill at call {at}: no half-made extra guest");
            if !killed {
                assert!(first.is_ok());
                break;
            }
            at += 1;
        }
        assert!(at > 5, "{name}: the kill points covered the whole creation ({at} calls)");
    }
}

#[tokio::test]
async fn a_failed_reboot_rolls_back_to_the_safety_snapshot_and_stalls() {
    let w = world().await;
    let mut g = example("web01"); // RebootIfNeeded + snapshotBeforeChange
    let first = apply(&w, &g).await;
    assert!(ready(&first.status));
    let vmid = first.status.vmid.unwrap();
    w.sim
        .faults
        .lock()
        .unwrap()
        .scripted
        .push_back(homelab_operator::sim::ScriptedFault::new(
            "POST",
            "/status/reboot",
            homelab_operator::sim::FaultKind::FailTask("reboot failed: guest did not come back".into()),
            1,
        ));
    g.spec.cpu.cores = 6;
    g.metadata.generation = Some(2);
    g.status = Some(first.status);
    let id = Identity::of(&g);
    let sink = MemoryStatus::default();
    *sink.0.lock().unwrap() = g.status.clone().unwrap();
    let ctx = GuestCtx::new(w.engine.env(), "default").unwrap();
    let mut stalled = None;
    for _ in 0..1000 {
        let status = sink.0.lock().unwrap().clone();
        match proxmox_guest::reconcile(
            &ctx,
            GuestObject {
                id: &id,
                spec: &g.spec,
                status,
                generation: Some(2),
                ci_password: None,
            },
            &sink,
        )
        .await
        {
            Ok(out) => {
                *sink.0.lock().unwrap() = out.status.clone();
                if let Some(c) = api::find_condition(&out.status.conditions, api::CONDITION_STALLED).filter(|c| c.status == "True")
                    && out.status.current_task.is_none()
                {
                    stalled = Some(c.clone());
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    let c = stalled.expect("stalled after the rollback");
    assert_eq!(c.reason, "RolledBack");
    assert!(
        c.message.contains("reboot failed: guest did not come back") && c.message.contains("hlo-g2-"),
        "{}",
        c.message
    );
    let guest = w.sim.guest(vmid).unwrap();
    assert_eq!(cfg(&guest, "cores"), "2", "config restored from the snapshot");
    assert!(guest.snapshots.keys().any(|k| k.starts_with("hlo-g2-")));
    // It does not retry the failing change on its own: a new generation is needed.
    w.sim.reset_calls();
    let status = sink.0.lock().unwrap().clone();
    let out = proxmox_guest::reconcile(
        &ctx,
        GuestObject {
            id: &id,
            spec: &g.spec,
            status,
            generation: Some(2),
            ci_password: None,
        },
        &sink,
    )
    .await
    .unwrap();
    assert!(out.plan.actions.is_empty());
    assert!(w.sim.calls().keys().all(|k| k.starts_with("GET")), "{:?}", w.sim.calls());
}

/// `plan` as a person runs it: a guest that does not exist yet is a creation
/// (its VMID allocated at apply), marked apart from updates, and `--output json` says the same.
#[tokio::test(flavor = "multi_thread")]
async fn plan_shows_every_creation_and_offers_json() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, config_section(&w.sim, &w._server, dir.path()).unwrap()).unwrap();
    let guest = dir.path().join("guest.yaml");
    std::fs::write(
        &guest,
        "apiVersion: homelab.dev/v1alpha1\nkind: ProxmoxGuest\nmetadata: {name: fresh, namespace: lab}\nspec:\n  type: lxc\n  \
         source: {osTemplate: \"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\"}\n  memoryMiB: 512\n  \
         disks: [{slot: rootfs, storage: local-lvm, sizeGiB: 8}]\n",
    )
    .unwrap();
    let run = |extra: &'static [&'static str]| {
        let (config, guest) = (config.clone(), guest.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_homelab-operator"))
                .arg("plan")
                .arg("--config")
                .arg(&config)
                .arg("-f")
                .arg(&guest)
                .args(extra)
                .output()
                .unwrap()
        })
    };
    let text = run(&[]).await.unwrap();
    let out = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(2), "changes pending: {out}");
    assert!(out.contains("  + create guest (VMID allocated at apply) on "), "{out}");
    assert!(out.contains("Plan: 1 to create, 0 to update"), "{out}");
    let json = run(&["--output", "json"]).await.unwrap();
    assert_eq!(json.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v[0]["kind"], "ProxmoxGuest");
    assert_eq!(v[0]["name"], "lab/fresh");
    assert_eq!(v[0]["changes"][0]["op"], "create");
    assert!(w.sim.guests().is_empty(), "plan wrote nothing");
}

/// A batch created at once over `allowedNodes` spreads instead of piling onto one node.
#[tokio::test]
async fn a_batch_of_new_guests_spreads_over_the_allowed_nodes() {
    let w = world().await;
    let guests: Vec<ProxmoxGuest> = (0..6)
        .map(|i| {
            serde_yaml_ng::from_str(&format!(
                "apiVersion: homelab.dev/v1alpha1\nkind: ProxmoxGuest\nmetadata: {{name: batch{i}, namespace: lab}}\nspec:\n  type: lxc\n  \
                 allowedNodes: [pve1, pve3]\n  source: {{osTemplate: \"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\"}}\n  \
                 memoryMiB: 4096\n  disks: [{{slot: rootfs, storage: local-lvm, sizeGiB: 8}}]\n"
            ))
            .unwrap()
        })
        .collect();
    let results = w
        .engine
        .apply_all(&guests, &Files::default(), 6, Duration::from_secs(60), &|_| {})
        .await;
    assert!(results.iter().all(|r| r.error.is_none() && ready(&r.status)));
    let on = |node: &str| w.sim.guests().iter().filter(|g| g.node == node).count();
    assert!(on("pve1") >= 2 && on("pve3") >= 2, "pve1: {}, pve3: {}", on("pve1"), on("pve3"));
    assert_eq!(on("pve2"), 0, "only allowed nodes");
}

/// What a flaky cluster answers, one of each kind on a step of convergence
/// (a plain HTTP 500 "Internal Server Error", a 595, a reset connection, a
/// stalled request, a cluster-filesystem lock timeout, a guest lock): the
/// examples converge anyway. `apply` gives up at once on an error classed as
/// needing a person, so none of these may be classed so.
#[tokio::test]
async fn guests_converge_through_every_kind_of_transient_fault() {
    use homelab_operator::sim::{FaultKind, ScriptedFault};
    let w = world().await;
    let faults = [
        ("GET", "/cluster/resources", FaultKind::Status(500, "Internal Server Error".into())),
        ("POST", "/lxc", FaultKind::Status(595, "Connection refused".into())),
        ("POST", "/clone", FaultKind::Status(500, "Internal Server Error".into())),
        ("GET", "/pending", FaultKind::Drop),
        ("GET", "/pending", FaultKind::Timeout),
        (
            "POST",
            "/status/start",
            FaultKind::Status(500, "cfs-lock 'file-user_cfg' error: got lock request timeout".into()),
        ),
        ("POST", "/config", FaultKind::Locked),
    ];
    for (method, path, kind) in faults {
        w.sim
            .faults
            .lock()
            .unwrap()
            .scripted
            .push_back(ScriptedFault::new(method, path, kind, 1));
    }
    converge_examples(&w, Duration::from_secs(120)).await;
    let left: Vec<String> = w
        .sim
        .faults
        .lock()
        .unwrap()
        .scripted
        .iter()
        .map(|f| format!("{:?} {}", f.method, f.path_contains))
        .collect();
    assert!(left.is_empty(), "every fault was met on the way: {left:?} were not");
}

/// A guest the user put under Proxmox HA after the operator made it: PVE
/// turns a stop into an HA state change (a `hastop` task that ends before the
/// HA manager acts) and refuses to delete it without `purge`. The operator
/// judges power by the state the guest reaches, and deletes with `purge`.
#[tokio::test]
async fn a_guest_under_ha_is_stopped_through_ha_and_deleted_with_its_ha_resource() {
    let w = world().await;
    let mut vm = example("web01"); // deletionPolicy: Delete
    let made = apply(&w, &vm).await;
    let vmid = made.status.vmid.unwrap();
    w.sim.manage_by_ha(vmid);

    vm.spec.power = api::PowerState::Stopped;
    let stopped = apply(&w, &vm).await;
    assert!(
        stopped.error.is_none() && ready(&stopped.status),
        "{:?} {:?}",
        stopped.error,
        stopped.status.conditions
    );
    assert!(!w.sim.guest(vmid).unwrap().running, "the HA manager stopped it");
    let types = w.sim.task_types();
    assert!(types.iter().any(|t| t == "hastop"), "{types:?}");
    assert!(
        !types.iter().any(|t| t == "qmstop" || t == "qmshutdown"),
        "PVE never stops an HA guest directly: {types:?}"
    );

    delete(&w, &vm, stopped.status).await.unwrap();
    assert!(w.sim.guest(vmid).is_none(), "deleted");
    assert!(!w.sim.ha_managed(vmid), "its HA resource purged with it");
}
