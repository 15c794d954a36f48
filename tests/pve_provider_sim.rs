//! The PVE client against the simulator over real HTTPS on loopback:
//! happy paths, contract checks, injected faults, retry counts, error classes.

use std::{sync::Arc, time::Duration};

use homelab_operator::{
    config::TlsTrust,
    metrics::Metrics,
    providers::pve::{ErrorClass, GuestKind, PveApi, PveClient, client::wait_task},
    sim::{
        FaultKind, ScriptedFault,
        pve::{PveSim, PveSimConfig, endpoint_for},
    },
};

struct Fixture {
    sim: Arc<PveSim>,
    client: PveClient,
    metrics: Arc<Metrics>,
    _server: homelab_operator::sim::SimServer,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let sim = PveSim::with_defaults(PveSimConfig {
        // Tasks run until a test finishes them: no test depends on how fast the machine is.
        task_duration: Duration::from_secs(3600),
        ..Default::default()
    })
    .unwrap();
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ep = endpoint_for("default", &sim, &server, dir.path()).unwrap();
    let metrics = Arc::new(Metrics::default());
    let client = PveClient::new(&ep, Some(metrics.clone())).unwrap();
    Fixture {
        sim,
        client,
        metrics,
        _server: server,
        _dir: dir,
    }
}

fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn creates_an_lxc_and_reads_it_back() {
    let f = fixture().await;
    let id = f.client.next_id(None).await.unwrap();
    assert_eq!(id, 100);
    let upid = f
        .client
        .create(
            "pve2",
            GuestKind::Lxc,
            p(&[
                ("vmid", "100"),
                ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
                ("hostname", "dns01"),
                ("memory", "512"),
                ("rootfs", "local-lvm:8"),
                ("net0", "name=eth0,bridge=vmbr0,ip=10.5.0.53/24,gw=10.5.0.1"),
                ("unprivileged", "1"),
                ("tags", "hlo-abc;dns"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(upid.task_type, "vzcreate");
    // While the task runs the guest is already there, locked, with our tag.
    let res = f.client.cluster_resources().await.unwrap();
    let g = res.iter().find(|r| r.vmid == 100).unwrap();
    assert_eq!(g.lock.as_deref(), Some("create"));
    assert!(g.tag_list().contains(&"hlo-abc".to_string()));
    let st = {
        f.sim.finish_tasks();
        wait_task(&f.client, &upid, Duration::from_millis(20), Duration::from_secs(5))
    }
    .await
    .unwrap();
    assert_eq!(st.failure(), None);
    let pending = f.client.pending("pve2", GuestKind::Lxc, 100).await.unwrap();
    let rootfs = pending.iter().find(|e| e.key == "rootfs").unwrap();
    assert_eq!(rootfs.value.as_ref().unwrap(), "local-lvm:subvol-100-disk-0,size=8G");
    let net0 = pending
        .iter()
        .find(|e| e.key == "net0")
        .unwrap()
        .value
        .as_ref()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    assert!(net0.contains("hwaddr=BC:24:11:"), "{net0}");
}

#[tokio::test]
async fn refuses_what_the_real_server_refuses() {
    let f = fixture().await;
    // `true` is not a PVE boolean.
    let e = f
        .client
        .create("pve1", GuestKind::Qemu, p(&[("vmid", "150"), ("onboot", "true")]))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Invalid);
    assert!(e.to_string().contains("onboot: type check ('boolean') failed - got 'true'"), "{e}");
    // Unknown parameters are refused.
    let e = f
        .client
        .create("pve1", GuestKind::Qemu, p(&[("vmid", "150"), ("foo", "1")]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("foo: property is not defined in schema"), "{e}");
    // Property strings are checked key by key.
    let e = f
        .client
        .create(
            "pve1",
            GuestKind::Qemu,
            p(&[("vmid", "150"), ("net0", "virtio,bridge=vmbr0,vlan=5")]),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("net0: invalid format - property vlan"), "{e}");
    // Missing guest: the real text and a NotFound class.
    let e = f.client.pending("pve1", GuestKind::Qemu, 999).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::NotFound);
    assert!(
        e.to_string()
            .contains("Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist"),
        "{e}"
    );
}

#[tokio::test]
async fn retries_idempotent_calls_only() {
    let f = fixture().await;
    f.sim.faults.lock().unwrap().scripted.push_back(ScriptedFault::new(
        "GET",
        "/cluster/resources",
        FaultKind::Status(500, "cfs-lock 'file-user_cfg' error: got lock request timeout".into()),
        2,
    ));
    f.sim.reset_calls();
    let res = f.client.cluster_resources().await.unwrap();
    assert!(res.iter().any(|r| r.vmid == 9000 && r.template));
    assert_eq!(
        f.sim.calls()["GET /cluster/resources"],
        1,
        "failed calls are answered before routing counts them"
    );
    assert_eq!(f.metrics.outside_call_total("pve"), 3, "two failures then success");

    // A creating POST is never repeated, even on a transient error.
    f.sim.faults.lock().unwrap().scripted.push_back(ScriptedFault::new(
        "POST",
        "/qemu/9000/clone",
        FaultKind::Status(500, "cfs-lock 'file-user_cfg' error: got lock request timeout".into()),
        1,
    ));
    let before = f.metrics.outside_call_total("pve");
    let e = f
        .client
        .clone_guest("pve1", GuestKind::Qemu, 9000, p(&[("newid", "120")]))
        .await
        .unwrap_err();
    assert!(e.is_transient());
    assert_eq!(f.metrics.outside_call_total("pve") - before, 1);
}

#[tokio::test]
async fn classifies_locks_timeouts_and_dropped_connections() {
    let f = fixture().await;
    let upid = f
        .client
        .clone_guest("pve1", GuestKind::Qemu, 9000, p(&[("newid", "120"), ("name", "web01")]))
        .await
        .unwrap();
    // The clone holds a lock until its task ends.
    let e = f
        .client
        .update_config("pve1", GuestKind::Qemu, 120, p(&[("cores", "4")]))
        .await
        .unwrap_err();
    assert!(e.is_locked() && e.is_transient(), "{e}");
    {
        f.sim.finish_tasks();
        wait_task(&f.client, &upid, Duration::from_millis(20), Duration::from_secs(5))
    }
    .await
    .unwrap();

    f.sim
        .faults
        .lock()
        .unwrap()
        .scripted
        .push_back(ScriptedFault::new("POST", "/status/start", FaultKind::Drop, 1));
    let e = f.client.power("pve1", GuestKind::Qemu, 120, "start").await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "{e}");

    f.sim.faults.lock().unwrap().scripted.push_back(ScriptedFault::new(
        "POST",
        "/status/start",
        FaultKind::Status(595, "No route to host".into()),
        1,
    ));
    let e = f.client.power("pve1", GuestKind::Qemu, 120, "start").await.unwrap_err();
    assert!(e.is_transient() && e.to_string().contains("595"), "{e}");

    f.sim.faults.lock().unwrap().scripted.push_back(ScriptedFault::new(
        "POST",
        "/status/start",
        FaultKind::FailTask("start failed: QEMU exited with code 1".into()),
        1,
    ));
    let upid = f.client.power("pve1", GuestKind::Qemu, 120, "start").await.unwrap();
    let st = {
        f.sim.finish_tasks();
        wait_task(&f.client, &upid, Duration::from_millis(20), Duration::from_secs(5))
    }
    .await
    .unwrap();
    assert_eq!(st.failure(), Some("start failed: QEMU exited with code 1"));
}

#[tokio::test]
async fn times_out_instead_of_hanging() {
    let f = fixture().await;
    f.sim
        .faults
        .lock()
        .unwrap()
        .scripted
        .push_back(ScriptedFault::new("POST", "/clone", FaultKind::Timeout, 1));
    let dir = tempfile::tempdir().unwrap();
    let server = f.sim.serve().await.unwrap();
    let mut ep = endpoint_for("t", &f.sim, &server, dir.path()).unwrap();
    ep.timeout = Duration::from_millis(300);
    let client = PveClient::new(&ep, None).unwrap();
    let e = client
        .clone_guest("pve1", GuestKind::Qemu, 9000, p(&[("newid", "121")]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
}

#[tokio::test]
async fn tls_is_verified_by_fingerprint_or_ca_and_refused_otherwise() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let server = f.sim.serve().await.unwrap();
    let mut ep = endpoint_for("t", &f.sim, &server, dir.path()).unwrap();

    ep.tls = TlsTrust::Fingerprint("00".repeat(32));
    let e = PveClient::new(&ep, None).unwrap().nodes().await.unwrap_err();
    assert!(e.to_string().contains("fingerprint"), "{e}");

    ep.tls = TlsTrust::System;
    let e = PveClient::new(&ep, None).unwrap().nodes().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "self-signed certificate refused by default: {e}");

    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, server.cert_pem.as_ref().unwrap()).unwrap();
    ep.tls = TlsTrust::CaFile(ca);
    assert_eq!(PveClient::new(&ep, None).unwrap().nodes().await.unwrap().len(), 3);

    ep.tls = TlsTrust::InsecureSkipVerify;
    assert_eq!(PveClient::new(&ep, None).unwrap().nodes().await.unwrap().len(), 3);
}

#[tokio::test]
async fn bad_token_is_a_permission_error() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let server = f.sim.serve().await.unwrap();
    let ep = endpoint_for("t", &f.sim, &server, dir.path()).unwrap();
    if let homelab_operator::config::SecretSource::File(p) = &ep.token_secret {
        std::fs::write(p, "wrong").unwrap();
    }
    let e = PveClient::new(&ep, None).unwrap().nodes().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permission);
    assert!(
        e.to_string().contains("401") && e.to_string().contains("authentication failure"),
        "{e}"
    );
    assert!(!e.to_string().contains("wrong"), "the secret never appears in an error");
}

#[tokio::test]
async fn node_inventory_lists_storages_content_and_bridges() {
    let f = fixture().await;
    let storages = f.client.node_storages("pve1").await.unwrap();
    let local = storages.iter().find(|s| s.storage == "local").unwrap();
    assert!(local.accepts("iso") && local.accepts("vztmpl") && !local.accepts("images"));
    assert!(local.active);
    let isos = f.client.storage_content("pve1", "local", Some("iso")).await.unwrap();
    assert_eq!(
        isos.iter().map(|v| v.volid.as_str()).collect::<Vec<_>>(),
        ["local:iso/debian-13.1.0-amd64-netinst.iso"]
    );
    assert_eq!(isos[0].content.as_deref(), Some("iso"));
    let bridges = f.client.node_bridges("pve1").await.unwrap();
    assert_eq!(bridges.iter().map(|b| b.iface.as_str()).collect::<Vec<_>>(), ["vmbr0", "vmbr1"]);
    assert!(bridges.iter().all(|b| b.kind == "bridge"));
    // PVE's refusals for what is not there.
    let e = f.client.storage_content("pve1", "gone", Some("iso")).await.unwrap_err();
    assert!(e.to_string().contains("storage 'gone' does not exist"), "{e}");
    assert_eq!(e.class(), ErrorClass::NotFound);
    let e = f.client.node_storages("pve9").await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::NotFound, "{e}");
}

#[tokio::test]
async fn agent_interfaces_carry_the_nic_macs() {
    let f = fixture().await;
    let upid = f
        .client
        .create(
            "pve1",
            GuestKind::Lxc,
            p(&[
                ("vmid", "120"),
                ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
                ("rootfs", "local-lvm:4"),
                ("net0", "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:AA:00:01,ip=10.5.0.9/24"),
                ("net1", "name=san0,bridge=vmbr1,hwaddr=BC:24:11:AA:00:02,ip=dhcp"),
            ]),
        )
        .await
        .unwrap();
    f.sim.finish_tasks();
    assert!(f.client.task_status(&upid).await.unwrap().failure().is_none());
    let start = f.client.power("pve1", GuestKind::Lxc, 120, "start").await.unwrap();
    f.sim.finish_tasks();
    assert!(f.client.task_status(&start).await.unwrap().failure().is_none());
    let nics = f.client.guest_interfaces("pve1", GuestKind::Lxc, 120).await.unwrap();
    let seen: Vec<(&str, Option<&str>, &[String])> = nics.iter().map(|n| (n.name.as_str(), n.mac.as_deref(), n.ips.as_slice())).collect();
    assert_eq!(seen.len(), 2, "lo is left out: {seen:?}");
    assert_eq!(seen[0].0, "eth0");
    assert_eq!(seen[0].1, Some("BC:24:11:AA:00:01"));
    assert_eq!(seen[0].2, ["10.5.0.9".to_string()]);
    assert_eq!(seen[1].1, Some("BC:24:11:AA:00:02"));
}

#[tokio::test]
async fn backup_jobs_round_trip_with_pves_shapes_and_refusals() {
    use homelab_operator::providers::pve::codec::prune_backups;
    let f = fixture().await;
    let job = p(&[
        ("id", "hlo-nightly"),
        ("schedule", "mon..fri 22:00"),
        ("storage", "pbs1"),
        ("mode", "snapshot"),
        ("vmid", "100,101"),
        ("prune-backups", "keep-daily=7,keep-weekly=4"),
        ("notes-template", "{{guestname}}"),
        ("comment", "homelab-operator: homelab/nightly uid=u-1"),
    ]);
    f.client.create_backup_job(job.clone()).await.unwrap();
    let jobs = f.client.backup_jobs().await.unwrap();
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    assert_eq!(
        (j.id.as_str(), j.schedule.as_deref(), j.vmid.as_deref()),
        ("hlo-nightly", Some("mon..fri 22:00"), Some("100,101"))
    );
    assert!(j.is_enabled() && j.next_run.is_some());
    // Read back as an object of strings, written as a property string: one map either way.
    assert_eq!(
        prune_backups(j.prune_backups.as_ref().unwrap()),
        [("keep-daily".to_string(), 7), ("keep-weekly".to_string(), 4)].into()
    );
    assert_eq!(
        prune_backups(&serde_json::json!("keep-daily=7,keep-weekly=4")),
        prune_backups(j.prune_backups.as_ref().unwrap())
    );

    f.client
        .update_backup_job("hlo-nightly", p(&[("vmid", "100"), ("delete", "notes-template")]))
        .await
        .unwrap();
    let j = f.client.backup_jobs().await.unwrap().remove(0);
    assert_eq!((j.vmid.as_deref(), j.notes_template.as_deref()), (Some("100"), None));

    // PVE's refusals.
    let e = f.client.create_backup_job(job.clone()).await.unwrap_err();
    assert!(e.to_string().contains("job 'hlo-nightly' already exists"), "{e}");
    let mut bad = job.clone();
    bad[0].1 = "hlo-other".into();
    bad[1].1 = "every night".into();
    let e = f.client.create_backup_job(bad).await.unwrap_err();
    assert!(e.to_string().contains("unable to parse calendar event"), "{e}");
    assert_eq!(e.class(), ErrorClass::Invalid);
    let mut local = job.clone();
    local[0].1 = "hlo-local".into();
    local[2].1 = "local-lvm".into();
    let e = f.client.create_backup_job(local).await.unwrap_err();
    assert!(e.to_string().contains("storage 'local-lvm' does not support backups"), "{e}");
    assert!(!e.is_transient());
    // One selection per job, and one line per option (jobs.cfg is a section config).
    for (key, value, words) in [
        ("pool", "homelab", "option conflicts with option 'vmid'"),
        ("exclude", "101", "option conflicts with option 'vmid'"),
        ("comment", "two\nlines", "property 'comment' contains a line feed"),
    ] {
        let e = f.client.update_backup_job("hlo-nightly", p(&[(key, value)])).await.unwrap_err();
        assert!(e.to_string().contains(words), "{key}: {e}");
    }
    let e = f
        .client
        .update_backup_job("hlo-nightly", p(&[("exclude", "101"), ("delete", "vmid")]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("only makes sense in combination with option 'all'"), "{e}");

    f.client.delete_backup_job("hlo-nightly").await.unwrap();
    let e = f.client.delete_backup_job("hlo-nightly").await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::NotFound, "{e}");
    assert!(f.client.backup_jobs().await.unwrap().is_empty());
    // A job create is never retried (it is not idempotent).
    assert_eq!(f.sim.calls().get("POST /cluster/backup"), Some(&4), "four creates, four calls");
}
