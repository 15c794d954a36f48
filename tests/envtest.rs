//! The envtest tier: the operator's Kubernetes behaviour on a real kube-apiserver
//! (`cargo test --features envtest --test envtest`, with `HOMELAB_ENVTEST_ASSETS`).
//! Each test gets its own namespace, simulator and `homelab-operator run`
//! process, which runs as the chart's ServiceAccount (the chart's RBAC, not
//! cluster-admin). Waits are on conditions; the limits only end a hang.

mod support {
    pub mod admission_cases;
    pub mod debian;
    pub mod envtest;
    pub mod envtest_world;
    pub mod smtp;
}

use std::{path::Path, process::Command, sync::Arc, time::Duration};

use homelab_operator::api::{self, ProxmoxGuest};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::envtest_world::*;

#[path = "tiers/envtest_bad_inputs.rs"]
mod bad_inputs;
#[path = "tiers/envtest_events.rs"]
mod events;
#[path = "tiers/envtest_export.rs"]
mod export;
#[path = "tiers/envtest_guest_watch.rs"]
mod guest_watch;
#[path = "tiers/envtest_updates.rs"]
mod updates;

/// Long enough for any honest convergence on a loaded 2-core machine.
#[tokio::test(flavor = "multi_thread")]
async fn admission_matches_the_local_rules_and_examples_are_admitted() {
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "admission").await;
    let api: Api<ProxmoxGuest> = Api::namespaced(client.clone(), &ns);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let parse = |yaml: &str, name: &str| -> ProxmoxGuest {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: homelab.dev/v1alpha1\nkind: ProxmoxGuest\nmetadata: {{name: {name}}}\nspec:\n{yaml}"
        ))
        .unwrap()
    };
    for yaml in support::admission_cases::admitted_guests() {
        api.create(&dry, &parse(&yaml, "ok-guest"))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    }
    for (yaml, needle, _) in support::admission_cases::refused_guests() {
        let err = api.create(&dry, &parse(&yaml, "bad-guest")).await.expect_err(needle).to_string();
        assert!(err.contains(needle), "expected {needle:?} in {err}\n{yaml}");
    }
    // Without spec.name, metadata.name must be a DNS label.
    let e = api
        .create(
            &dry,
            &parse(&support::admission_cases::BASE_LXC.replace("  name: dns01\n", ""), "web.01"),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("metadata.name must be a DNS label"), "{e}");
    // Untyped: some refused specs do not even fit the Rust types (that is the point).
    let resource = kube::discovery::ApiResource::erase::<api::BackupPolicy>(&());
    let policies: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let policy = |yaml: &str, name: &str| -> kube::api::DynamicObject {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: homelab.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: {name}}}\nspec:\n{yaml}"
        ))
        .unwrap()
    };
    for yaml in support::admission_cases::admitted_policies() {
        policies
            .create(&dry, &policy(&yaml, "ok-policy"))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    }
    for (yaml, needle, _) in support::admission_cases::refused_policies() {
        let err = policies
            .create(&dry, &policy(&yaml, "bad-policy"))
            .await
            .expect_err(needle)
            .to_string();
        assert!(err.contains(needle), "expected {needle:?} in {err}\n{yaml}");
    }
    let resource = kube::discovery::ApiResource::erase::<api::MonitorTarget>(&());
    let monitors: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let monitor = |yaml: &str, name: &str| -> kube::api::DynamicObject {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: homelab.dev/v1alpha1\nkind: MonitorTarget\nmetadata: {{name: {name}}}\nspec:\n{yaml}"
        ))
        .unwrap()
    };
    for yaml in support::admission_cases::admitted_monitors() {
        monitors
            .create(&dry, &monitor(&yaml, "ok-monitor"))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    }
    for (yaml, needle, _) in support::admission_cases::refused_monitors() {
        let err = monitors
            .create(&dry, &monitor(&yaml, "bad-monitor"))
            .await
            .expect_err(needle)
            .to_string();
        assert!(err.contains(needle), "expected {needle:?} in {err}\n{yaml}");
    }
    let resource = kube::discovery::ApiResource::erase::<api::DnsRecord>(&());
    let records: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    for (yaml, needle, _) in support::admission_cases::refused_records() {
        let obj: kube::api::DynamicObject = serde_yaml_ng::from_str(&format!(
            "apiVersion: homelab.dev/v1alpha1\nkind: DnsRecord\nmetadata: {{name: bad-record}}\nspec:\n  zone: home.arpa\n{yaml}"
        ))
        .unwrap();
        let err = records.create(&dry, &obj).await.expect_err(needle).to_string();
        assert!(err.contains(needle), "expected {needle:?} in {err}\n{yaml}");
    }
    // Every example, server-side, as a person would apply them.
    let (ok, out) = plane.kubectl(&["create", "namespace", "homelab"]);
    assert!(ok || out.contains("AlreadyExists"), "{out}");
    let (ok, out) = plane.kubectl(&["apply", "--server-side", "--dry-run=server", "-f", "manifests/examples"]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_converges_follows_edits_corrects_drift_and_is_deleted() {
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "lifecycle").await;
    let w = world(Duration::from_millis(200)).await;
    let op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "lifecycle");
    let api: Api<ProxmoxGuest> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &lxc("media", json!({}))).await.unwrap();
    let g = wait_for(&api, "media", "Ready", &op, |g| is_true(g, "Ready")).await;
    let vmid = g.status.as_ref().unwrap().vmid.unwrap();
    assert_eq!(sim_config(&w, vmid, "hostname"), "media", "spec.name defaults to metadata.name");
    assert!(g.finalizers().iter().any(|f| f == api::GUEST_FINALIZER));

    // Spec edit → converged.
    let patch = json!({"spec": {"cpu": {"cores": 3}}});
    api.patch("media", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for(&api, "media", "converged on cores 3", &op, |g| {
        is_true(g, "Ready") && sim_config(&w, vmid, "cores") == "3"
    })
    .await;

    // Out-of-band edit on Proxmox → corrected by the drift check.
    w.sim.edit_config(vmid, "cores", json!(1));
    wait_for(&api, "media", "drift corrected", &op, |_| sim_config(&w, vmid, "cores") == "3").await;

    // deletionPolicy: Delete → the guest goes, then the finalizer.
    api.delete("media", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "media", &op).await;
    assert!(w.sim.guest(vmid).is_none(), "guest destroyed");

    // deletionPolicy: Retain → the guest stays without our mark.
    api.create(&PostParams::default(), &lxc("keep", json!({"deletionPolicy": "Retain"})))
        .await
        .unwrap();
    let g = wait_for(&api, "keep", "Ready", &op, |g| is_true(g, "Ready")).await;
    let vmid = g.status.unwrap().vmid.unwrap();
    api.delete("keep", &DeleteParams::default()).await.unwrap();
    wait_gone(&api, "keep", &op).await;
    assert!(w.sim.guest(vmid).is_some(), "guest kept");
    assert!(!sim_config(&w, vmid, "tags").contains("hlo-"), "mark removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_error_stalls_keeps_its_vmid_and_does_not_loop() {
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "stalled").await;
    let w = world(Duration::from_millis(200)).await;
    let op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "stalled");
    let api: Api<ProxmoxGuest> = Api::namespaced(client.clone(), &ns);
    // PVE refuses a pool that does not exist with 403 "Permission check failed (pool 'nope' …)".
    api.create(&PostParams::default(), &lxc("lost", json!({"pool": "nope"})))
        .await
        .unwrap();
    let g = wait_for(&api, "lost", "Stalled", &op, |g| is_true(g, "Stalled")).await;
    let c = condition(&g, "Stalled").unwrap();
    assert!(c.message.contains("pool 'nope' does not exist"), "{c:?}");
    let vmid = g.status.as_ref().unwrap().vmid;
    assert!(vmid.is_some(), "the allocated VMID is kept in status");
    let calls = w.sim.total_calls();
    // A measurement window, not a timing assumption: a hot loop (the old
    // behaviour: two attempts a second) shows up here; a slow machine only
    // makes the count smaller.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let more = w.sim.total_calls() - calls;
    assert!(more <= 2, "{more} PVE calls while stalled: {:?}", w.sim.calls());
    let g = api.get("lost").await.unwrap();
    assert_eq!(g.status.unwrap().vmid, vmid, "no new VMID per attempt");

    // The fix (a spec edit) is picked up at once.
    api.patch(
        "lost",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"pool": "homelab"}})),
    )
    .await
    .unwrap();
    let g = wait_for(&api, "lost", "Ready after the fix", &op, |g| is_true(g, "Ready")).await;
    assert_eq!(g.status.unwrap().vmid, vmid, "created with the VMID it kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_9_mid_creation_never_duplicates_a_guest() {
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "killed").await;
    // Long tasks: the creation is surely in flight when the operator dies.
    let w = world(Duration::from_secs(3600)).await;
    let mut op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "killed-1");
    let api: Api<ProxmoxGuest> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &lxc("web", json!({}))).await.unwrap();
    wait_for(&api, "web", "creating", &op, |g| {
        g.status.as_ref().is_some_and(|s| s.current_task.is_some())
    })
    .await;
    op.kill9();
    w.sim.set_task_duration(Duration::from_millis(100));
    w.sim.finish_tasks();
    let op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "killed-2");
    wait_for(&api, "web", "Ready after the restart", &op, |g| is_true(g, "Ready")).await;
    assert_eq!(w.sim.guests().len(), 1, "exactly one guest");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_lease_holder_acts_and_a_killed_leader_is_replaced() {
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "leader").await;
    let w = world(Duration::from_millis(200)).await;
    let lease_ns = ["--lease-namespace", "homelab-operator"];
    let mut first = Operator::start(plane, &w, &ns, &lease_ns, "replica-a");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), "homelab-operator");
    let holder = || async {
        leases
            .get_opt("homelab-operator-leader")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
    };
    let deadline = tokio::time::Instant::now() + LIMIT;
    while holder().await.as_deref() != Some("replica-a") {
        assert!(tokio::time::Instant::now() < deadline, "replica-a never led: {}", first.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second = Operator::start(plane, &w, &ns, &lease_ns, "replica-b");
    let api: Api<ProxmoxGuest> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &lxc("one", json!({}))).await.unwrap();
    wait_for(&api, "one", "Ready", &first, |g| is_true(g, "Ready")).await;
    assert!(!second.logs().contains("acquired leadership"), "the standby acted");

    first.kill9();
    let killed = tokio::time::Instant::now();
    while holder().await.as_deref() != Some("replica-b") {
        assert!(tokio::time::Instant::now() < killed + LIMIT, "no hand-over: {}", second.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let handover = killed.elapsed();
    assert!(handover <= Duration::from_secs(15), "hand-over took {handover:?}");
    api.create(&PostParams::default(), &lxc("two", json!({}))).await.unwrap();
    wait_for(&api, "two", "Ready under the new leader", &second, |g| is_true(g, "Ready")).await;
    assert_eq!(w.sim.guests().len(), 2, "nothing created twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn children_are_garbage_collected_with_their_guest() {
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "collected").await;
    let w = world(Duration::from_millis(200)).await;
    let mut op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "gc-1");
    let guests: Api<ProxmoxGuest> = Api::namespaced(client.clone(), &ns);
    // A paused monitor: it is made and collected like the others, and checks nothing
    // (this guest's simulated address is not one to send packets to).
    let spec = json!({"dns": {"zone": "home.arpa"}, "proxy": {"domains": ["web.home.arpa"], "port": 8080},
                      "monitor": {"tcp": {"port": 22}, "paused": true}});
    guests.create(&PostParams::default(), &lxc("web", spec)).await.unwrap();
    wait_for(&guests, "web", "Ready with its children", &op, |g| is_true(g, "Ready")).await;
    let records: Api<api::DnsRecord> = Api::namespaced(client.clone(), &ns);
    let proxies: Api<api::ProxyHost> = Api::namespaced(client.clone(), &ns);
    let monitors: Api<api::MonitorTarget> = Api::namespaced(client.clone(), &ns);
    assert_eq!(monitors.get("web-monitor").await.unwrap().owner_references()[0].name, "web");
    let record = records.get("web-dns").await.unwrap();
    assert_eq!(record.owner_references()[0].name, "web");
    assert!(proxies.get("web-proxy").await.is_ok());
    assert!(!w.dns.records("web.home.arpa").is_empty());
    assert_eq!(w.npm.hosts().len(), 1);

    // The README's `kubectl get` tables, with the columns it shows.
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for short in ["pxg", "dns", "ph"] {
        let cmd = format!("$ kubectl get {short}");
        let shown = readme.lines().skip_while(|l| *l != cmd).nth(1).expect("README table");
        let (ok, out) = plane.kubectl(&["-n", &ns, "get", short]);
        assert!(ok, "{out}");
        let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(header, shown.split_whitespace().collect::<Vec<_>>(), "kubectl get {short}");
        assert!(out.lines().nth(1).is_some_and(|row| row.contains("True")), "{out}");
    }

    // The operator is gone and someone deletes the guest past its finalizer
    // (an uninstall, a stuck namespace): kube-controller-manager's garbage
    // collector deletes the children through their owner references.
    op.kill9();
    guests
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    guests.delete("web", &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while records.get("web-dns").await.unwrap().metadata.deletion_timestamp.is_none()
        || proxies.get("web-proxy").await.unwrap().metadata.deletion_timestamp.is_none()
        || monitors.get("web-monitor").await.unwrap().metadata.deletion_timestamp.is_none()
    {
        assert!(tokio::time::Instant::now() < deadline, "children not collected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Back up, the operator finishes the children's own cleanup outside.
    let op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "gc-2");
    let deadline = tokio::time::Instant::now() + LIMIT;
    while records.get_opt("web-dns").await.unwrap().is_some()
        || proxies.get_opt("web-proxy").await.unwrap().is_some()
        || monitors.get_opt("web-monitor").await.unwrap().is_some()
    {
        assert!(tokio::time::Instant::now() < deadline, "children kept; log:\n{}", op.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(w.dns.records("web.home.arpa").is_empty(), "record removed from the DNS server");
    assert!(w.npm.hosts().is_empty(), "proxy host removed from NPM");
}

fn ready_now(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], generation: Option<i64>) -> bool {
    api::find_condition(conditions, "Ready").is_some_and(|c| c.status == "True" && c.observed_generation == generation)
}

#[tokio::test(flavor = "multi_thread")]
async fn records_and_proxy_hosts_converge_are_corrected_and_deleted_by_policy() {
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "published").await;
    let w = world(Duration::from_millis(200)).await;
    let op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "published");
    let records: Api<api::DnsRecord> = Api::namespaced(client.clone(), &ns);
    let proxies: Api<api::ProxyHost> = Api::namespaced(client.clone(), &ns);
    let record = |name: &str, policy: &str| -> api::DnsRecord {
        serde_json::from_value(json!({
            "apiVersion": "homelab.dev/v1alpha1", "kind": "DnsRecord", "metadata": {"name": name},
            "spec": {"zone": "home.arpa", "name": name, "type": "A", "values": ["10.0.0.5"], "deletionPolicy": policy}
        }))
        .unwrap()
    };
    let rec_ready = |r: &api::DnsRecord| r.status.as_ref().is_some_and(|s| ready_now(&s.conditions, r.metadata.generation));
    for (name, policy) in [("nas", "Delete"), ("kept", "Retain")] {
        records.create(&PostParams::default(), &record(name, policy)).await.unwrap();
        wait_for(&records, name, "Ready", &op, rec_ready).await;
    }
    let a = |name: &str| {
        w.dns
            .records(&format!("{name}.home.arpa"))
            .iter()
            .map(|r| r.rdata["ipAddress"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(a("nas"), [json!("10.0.0.5")]);
    // Spec edit: converged.
    let edit = json!({"spec": {"values": ["10.0.0.6"]}});
    records.patch("nas", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    wait_for(&records, "nas", "converged", &op, |r| {
        rec_ready(r) && a("nas") == [json!("10.0.0.6")]
    })
    .await;
    // Someone edits the record on the server: corrected at the next re-read.
    w.dns.edit_records("nas.home.arpa", |r| r.rdata["ipAddress"] = json!("10.9.9.9"));
    wait_for(&records, "nas", "corrected", &op, |_| a("nas") == [json!("10.0.0.6")]).await;

    let host: api::ProxyHost = serde_json::from_value(json!({
        "apiVersion": "homelab.dev/v1alpha1", "kind": "ProxyHost", "metadata": {"name": "media"},
        "spec": {"domains": ["media.home.arpa"], "forward": {"host": "10.0.0.7", "port": 8096}}
    }))
    .unwrap();
    proxies.create(&PostParams::default(), &host).await.unwrap();
    let ph_ready = |p: &api::ProxyHost| p.status.as_ref().is_some_and(|s| ready_now(&s.conditions, p.metadata.generation));
    wait_for(&proxies, "media", "Ready", &op, ph_ready).await;
    let port = || w.npm.hosts().first().map(|h| h["forward_port"].clone());
    assert_eq!(port(), Some(json!(8096)));
    let edit = json!({"spec": {"forward": {"host": "10.0.0.7", "port": 8097}}});
    proxies.patch("media", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    wait_for(&proxies, "media", "converged", &op, |p| ph_ready(p) && port() == Some(json!(8097))).await;
    let id = w.npm.hosts()[0]["id"].as_u64().unwrap();
    w.npm.edit_host(id, json!({"forward_port": 9999}));
    wait_for(&proxies, "media", "corrected", &op, |_| port() == Some(json!(8097))).await;

    // Deletion by policy: Delete removes what it made, Retain keeps it; both release the finalizer.
    for name in ["nas", "kept"] {
        records.delete(name, &DeleteParams::default()).await.unwrap();
    }
    proxies.delete("media", &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !records.list(&Default::default()).await.unwrap().items.is_empty() || proxies.get_opt("media").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "finalizers kept; log:\n{}", op.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(a("nas").is_empty(), "Delete removed the record");
    assert_eq!(a("kept"), [json!("10.0.0.5")], "Retain kept it");
    assert!(w.npm.hosts().is_empty(), "the proxy host was removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_policy_keeps_one_job_for_its_members_and_reports_freshness() {
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "backups").await;
    let w = world(Duration::from_millis(200)).await;
    w.sim.add_backup_job(
        "backup-foreign-0001",
        json!({"schedule": "sat 03:00", "storage": "pbs1", "vmid": "999"}),
    );
    let op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "backups");
    let guests: Api<ProxmoxGuest> = Api::namespaced(client.clone(), &ns);
    let labelled = |name: &str, tier: &str| {
        // `lab` also names a policy the namespace does not have.
        let extra = if name == "lab" {
            json!({"backup": {"policy": "weekly"}})
        } else {
            json!({})
        };
        let mut g = lxc(name, extra);
        g.metadata.labels = Some([("backup".to_string(), tier.to_string())].into());
        g
    };
    guests.create(&PostParams::default(), &labelled("web", "nightly")).await.unwrap();
    guests.create(&PostParams::default(), &labelled("lab", "none")).await.unwrap();
    for name in ["web", "lab"] {
        wait_for(&guests, name, "Ready", &op, |g| is_true(g, "Ready")).await;
    }
    // Naming a policy that does not exist is said, not silent: the guest runs but is not backed up.
    let lab = wait_for(&guests, "lab", "BackupPolicyNotFound", &op, |g| {
        g.status
            .as_ref()
            .and_then(|s| api::find_condition(&s.conditions, "Degraded"))
            .is_some_and(|c| c.reason == "BackupPolicyNotFound")
    })
    .await;
    let why = condition_of(&lab.status.unwrap().conditions, "Degraded");
    assert!(why.contains("BackupPolicy \"weekly\"") && why.contains("not backed up"), "{why}");
    let vmid = |name: &str| {
        let guests = guests.clone();
        let name = name.to_string();
        async move { guests.get(&name).await.unwrap().status.unwrap().vmid.unwrap() }
    };
    let (web, lab) = (vmid("web").await, vmid("lab").await);
    let policies: Api<api::BackupPolicy> = Api::namespaced(client.clone(), &ns);
    let policy: api::BackupPolicy = serde_json::from_value(json!({
        "apiVersion": "homelab.dev/v1alpha1", "kind": "BackupPolicy", "metadata": {"name": "nightly"},
        "spec": {"selector": {"matchLabels": {"backup": "nightly"}}, "schedule": "02:30", "storage": "pbs1",
                 "retention": {"keepDaily": 7, "keepWeekly": 4}, "maxAge": "26h",
                 "pbs": {"endpoint": "main", "datastore": "store1", "verify": {"schedule": "sat 05:00"}},
                 "restoreTest": {"schedule": "0 7 * * 0", "scratchVmids": {"first": 9900, "last": 9909}, "storage": "local-lvm", "node": "pve1"}}
    }))
    .unwrap();
    policies.create(&PostParams::default(), &policy).await.unwrap();
    let ours = || {
        w.sim
            .backup_jobs()
            .into_iter()
            .filter(|j| j["id"] != json!("backup-foreign-0001"))
            .collect::<Vec<_>>()
    };
    let p = wait_for(&policies, "nightly", "reporting", &op, |p| {
        p.status.as_ref().is_some_and(|s| s.job_id.is_some())
    })
    .await;
    assert_eq!(ours().len(), 1, "exactly one job");
    let job = &ours()[0];
    assert_eq!((job["schedule"].clone(), job["storage"].clone()), (json!("02:30"), json!("pbs1")));
    assert_eq!(job["prune-backups"], json!({"keep-daily": "7", "keep-weekly": "4"}));
    assert_eq!(job["vmid"], json!(web.to_string()));
    // No run has been due yet: waiting for the first backup (ArgoCD: Progressing), not Degraded.
    let waiting = condition_of(&p.status.as_ref().unwrap().conditions, "Reconciling");
    assert!(
        waiting.contains("wait for their first backup") && waiting.contains("web"),
        "{waiting}"
    );
    assert_eq!(condition_of(&p.status.as_ref().unwrap().conditions, "Degraded"), "");

    // Relabelling a guest puts it in the job; its backup makes the policy Ready.
    let relabel = json!({"metadata": {"labels": {"backup": "nightly"}}});
    guests.patch("lab", &PatchParams::default(), &Patch::Merge(&relabel)).await.unwrap();
    let both = format!("{},{}", web.min(lab), web.max(lab));
    wait_for(&policies, "nightly", "updated", &op, |_| {
        ours().first().is_some_and(|j| j["vmid"] == json!(both))
    })
    .await;
    // "Back up now", exactly as the README says it: a new annotation value runs
    // one backup of every member.
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let annotate = readme
        .split('`')
        .find(|s| s.starts_with("kubectl annotate bkp nightly homelab.dev/backup-now="))
        .expect("README's back-up-now command");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{annotate} -n {ns}"))
        .env("KUBECONFIG", &plane.admin_kubeconfig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{annotate}: {}", String::from_utf8_lossy(&out.stderr));
    let p = wait_for(&policies, "nightly", "Ready", &op, |p| {
        p.status.as_ref().is_some_and(|s| ready_now(&s.conditions, p.metadata.generation))
    })
    .await;
    let s = p.status.unwrap();
    assert_eq!((s.fresh.as_deref(), s.member_count), (Some("2/2"), 2));
    let run = s.last_run.as_ref().unwrap();
    assert!(run.request.parse::<u64>().is_ok(), "the value the command set: {run:?}");
    assert_eq!(run.result.as_deref(), Some("OK"));
    assert!(
        s.members
            .iter()
            .all(|m| m.newest.as_ref().is_some_and(|b| b.volid.starts_with("pbs1:backup/ct/")))
    );
    let (ok, out) = plane.kubectl(&["-n", &ns, "get", "bkp"]);
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let shown = readme
        .lines()
        .skip_while(|l| *l != "$ kubectl get bkp")
        .nth(1)
        .expect("README table");
    let columns = |l: &str| {
        l.replace("LAST BACKUP", "LAST_BACKUP")
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(columns(out.lines().next().unwrap_or_default()), columns(shown), "kubectl get bkp");
    assert!(ok && out.contains("2/2"), "{out}");
    let metrics = op.metrics().await;
    for guest in ["web", "lab"] {
        let fresh = format!("homelab_operator_backup_fresh{{namespace=\"{ns}\",policy=\"nightly\",guest=\"{guest}\"}} 1");
        assert!(metrics.contains(&fresh), "{fresh} not in\n{metrics}");
    }
    assert!(metrics.contains("homelab_operator_backup_age_seconds{"), "{metrics}");
    assert!(
        metrics.contains("homelab_operator_guests_not_backed_up{cluster=\"default\"} 0"),
        "every guest of this cluster is in the job: {metrics}"
    );

    // The PBS verifies the backups; each member's status shows it.
    let verify_id = s
        .pbs_jobs
        .iter()
        .find(|j| j.kind == "verify")
        .expect("verify job in status")
        .id
        .clone();
    assert!(w.pbs.jobs("verify").contains_key(&verify_id));
    w.pbs.run_job("verify", &verify_id).unwrap();
    wait_for(&policies, "nightly", "verified", &op, |p| {
        p.status.as_ref().is_some_and(|s| {
            s.members.len() == 2
                && s.members
                    .iter()
                    .all(|m| m.newest.as_ref().and_then(|b| b.verified.as_deref()) == Some("ok"))
        })
    })
    .await;
    // A restore test by the README's command: restored, started, destroyed.
    let restore = readme
        .split('`')
        .find(|s| s.starts_with("kubectl annotate bkp nightly homelab.dev/restore-test-now="))
        .expect("README's restore-test command");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("{restore} -n {ns}"))
        .env("KUBECONFIG", &plane.admin_kubeconfig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{restore}: {}", String::from_utf8_lossy(&out.stderr));
    let p = wait_for(&policies, "nightly", "restore test done", &op, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.last_restore_test.as_ref())
            .is_some_and(|t| t.phase == "Done")
    })
    .await;
    let t = p.status.unwrap().last_restore_test.unwrap();
    assert_eq!(t.result.as_deref(), Some("OK"), "{t:?}");
    assert!(t.backup.starts_with("pbs1:backup/ct/"), "{t:?}");
    assert!((9900..=9909).contains(&t.scratch_vmid));
    assert!(w.sim.guests().iter().all(|g| g.vmid < 9900), "no scratch guest left behind");

    // Deleting the policy removes its job only, and no backup.
    policies.delete("nightly", &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while policies.get_opt("nightly").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "finalizer kept; log:\n{}", op.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ours().is_empty());
    assert_eq!(w.sim.backup_jobs().len(), 1, "the foreign job stays");
    assert!(w.pbs.jobs("verify").is_empty(), "its PBS job goes too");
    assert_eq!(w.pbs.snapshots("store1").len(), 2, "no backup is deleted");
}

fn condition_of(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], t: &str) -> String {
    api::find_condition(conditions, t).map(|c| c.message.clone()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_monitor_reports_up_then_down_with_one_message_then_recovers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "monitors").await;
    let w = world(Duration::from_millis(200)).await;
    // Email through a real SMTP server, besides the simulated chat services.
    let smtp = support::smtp::smtp();
    let password = w.dir.path().join("smtp-password");
    std::fs::write(&password, "smtp-s3cret\n").unwrap();
    let config = std::fs::read_to_string(&w.config).unwrap();
    let with_mail = config.replacen(
        "notifications:\n",
        &format!("notifications:\n{}", smtp.channel("mail", &password)),
        1,
    );
    std::fs::write(&w.config, with_mail).unwrap();
    let op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "monitors");
    // A real local service the test can take down.
    let up = Arc::new(AtomicBool::new(true));
    let state = up.clone();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let up = state.clone();
            async move {
                if up.load(Ordering::SeqCst) {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let monitors: Api<api::MonitorTarget> = Api::namespaced(client.clone(), &ns);
    let m: api::MonitorTarget = serde_json::from_value(json!({
        "apiVersion": "homelab.dev/v1alpha1", "kind": "MonitorTarget", "metadata": {"name": "web"},
        "spec": {"http": {"url": url}, "intervalSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 1,
                 "notify": {"channels": ["telegram", "ntfy", "mail"], "cooldownMinutes": 0}}
    }))
    .unwrap();
    monitors.create(&PostParams::default(), &m).await.unwrap();
    let state_is = |s: api::MonitorState| move |m: &api::MonitorTarget| m.status.as_ref().is_some_and(|st| st.state == s);
    let m = wait_for(&monitors, "web", "Up", &op, state_is(api::MonitorState::Up)).await;
    let s = m.status.unwrap();
    assert!(s.latency.as_deref().is_some_and(|l| l.ends_with("ms")), "{s:?}");
    assert_eq!(api::find_condition(&s.conditions, "Ready").map(|c| c.status.as_str()), Some("True"));
    up.store(false, Ordering::SeqCst);
    let m = wait_for(&monitors, "web", "Down and notified", &op, |m| {
        m.status
            .as_ref()
            .is_some_and(|s| s.state == api::MonitorState::Down && s.last_notification.is_some())
    })
    .await;
    assert_eq!(
        api::find_condition(&m.status.unwrap().conditions, "Healthy").map(|c| c.reason.as_str()),
        Some("Down")
    );
    let got = w.chat.received();
    assert_eq!(
        got.iter().map(|r| r.service).collect::<Vec<_>>(),
        ["telegram", "ntfy"],
        "one message per channel: {got:?}"
    );
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "and one email: {mails:?}");
    assert!(mails[0].contains("Subject: [FAILURE] MonitorTarget"), "{}", mails[0]);
    let (ok, out) = plane.kubectl(&["-n", &ns, "get", "mon"]);
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let shown = readme
        .lines()
        .skip_while(|l| *l != "$ kubectl get mon")
        .nth(1)
        .expect("README table");
    let columns = |l: &str| {
        l.replace("UPTIME 24H", "UPTIME_24H")
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(columns(out.lines().next().unwrap_or_default()), columns(shown), "kubectl get mon");
    assert!(ok && out.contains("Down"), "{out}");
    up.store(true, Ordering::SeqCst);
    wait_for(&monitors, "web", "recovered", &op, |m| {
        m.status
            .as_ref()
            .is_some_and(|s| s.state == api::MonitorState::Up && s.last_notification.as_ref().is_some_and(|n| n.event == "recovery"))
    })
    .await;
    assert_eq!(w.chat.received().len(), 4, "and one recovery message per channel");
    // The recovery email is sent after the Up status is written: wait for it.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while smtp.mails().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no recovery email; log:\n{}", op.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        smtp.mails()[1].contains("Subject: [RECOVERED] MonitorTarget"),
        "{}",
        smtp.mails()[1]
    );
    // Deleting the monitor stops its checks (the finalizer is released).
    monitors.delete("web", &DeleteParams::default()).await.unwrap();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while monitors.get_opt("web").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "finalizer kept; log:\n{}", op.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs = op.logs();
    for secret in [w.chat.config().telegram_token.as_str(), "SIM-discord-webhook-token", "smtp-s3cret"] {
        assert!(!logs.contains(secret), "a channel secret in the operator log");
    }
}

/// This machine's own address on its default route. The operator ignores
/// loopback addresses of guests (as it must), so a guest stand-in listens on
/// this one; packets to it are delivered locally and never leave the machine.
fn own_address() -> std::net::IpAddr {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    // A UDP connect only looks the route up; nothing is sent.
    s.connect("192.0.2.1:9")
        .expect("this test needs the machine's own non-loopback address");
    s.local_addr().unwrap().ip()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guests_monitor_stays_quiet_through_the_operators_reboot_and_goes_with_the_guest() {
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "guest-monitor").await;
    let w = world(Duration::from_millis(200)).await;
    let op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "guest-monitor");
    let vmid = 150;
    let ip = own_address();
    let port = homelab_operator::sim::pve::stand_in_web_server(w.sim.clone(), vmid, ip)
        .await
        .unwrap()
        .port();
    let guests: Api<ProxmoxGuest> = Api::namespaced(client.clone(), &ns);
    let monitors: Api<api::MonitorTarget> = Api::namespaced(client.clone(), &ns);
    // The guest's address is the one the stand-in server listens on.
    let spec = json!({
        "vmid": vmid, "updatePolicy": "RebootIfNeeded",
        "network": [{"slot": "net0", "bridge": "vmbr0", "ipv4": format!("{ip}/24")}],
        "monitor": {"http": {"port": port}, "intervalSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 1,
                    "notify": {"channels": ["telegram", "ntfy"], "cooldownMinutes": 0}}
    });
    guests.create(&PostParams::default(), &lxc("web", spec)).await.unwrap();
    let g = wait_for(&guests, "web", "Ready and Healthy", &op, |g| {
        is_true(g, "Ready") && is_true(g, "Healthy")
    })
    .await;
    assert_eq!(g.status.unwrap().children, ["web-monitor"]);
    // The README's command for it.
    let (ok, out) = plane.kubectl(&["-n", &ns, "wait", "--for=condition=Healthy", "pxg/web", "--timeout=60s"]);
    assert!(ok, "{out}");
    let m = monitors.get("web-monitor").await.unwrap();
    assert_eq!(m.owner_references()[0].name, "web");
    assert_eq!(m.status.as_ref().unwrap().state, api::MonitorState::Up);
    assert_eq!(m.status.unwrap().target.as_deref(), Some(format!("http://{ip}:{port}/").as_str()));

    // A change that needs a reboot, driven by the operator: the guest is down
    // for longer than the check interval, so checks fail, and nothing is sent.
    w.sim.set_task_duration(Duration::from_secs(25));
    let patch = json!({"spec": {"features": {"nesting": true}}});
    guests.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let state_is = |s: api::MonitorState| move |m: &api::MonitorTarget| m.status.as_ref().is_some_and(|st| st.state == s);
    let m = wait_for(
        &monitors,
        "web-monitor",
        "Maintenance",
        &op,
        state_is(api::MonitorState::Maintenance),
    )
    .await;
    assert!(m.status.unwrap().consecutive_failures >= 1, "the failing check is recorded");
    wait_for(&guests, "web", "rebooted and Ready", &op, |g| {
        g.status.as_ref().is_some_and(|s| ready_now(&s.conditions, g.metadata.generation))
    })
    .await;
    w.sim.set_task_duration(Duration::from_millis(200));
    assert_eq!(sim_config(&w, vmid, "features"), "nesting=1");
    wait_for(&monitors, "web-monitor", "Up again", &op, state_is(api::MonitorState::Up)).await;
    wait_for(&guests, "web", "Healthy again", &op, |g| is_true(g, "Healthy")).await;
    assert!(
        w.chat.received().is_empty(),
        "a reboot the operator drove sent {:?}",
        w.chat.received()
    );

    // Deleting the guest deletes its monitor first (its checks stop), then the guest.
    guests.delete("web", &DeleteParams::default()).await.unwrap();
    wait_gone(&guests, "web", &op).await;
    assert!(monitors.get_opt("web-monitor").await.unwrap().is_none());
    assert!(w.sim.guest(vmid).is_none());
    assert!(w.chat.received().is_empty(), "deleting sent {:?}", w.chat.received());
}
