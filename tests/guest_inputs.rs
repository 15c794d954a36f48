//! What a new guest needs and what it reports: references checked on the
//! node before creating, addresses per NIC, when the agent is asked, and the
//! privileges all of that takes.

use std::time::Duration;

use homelab_operator::{
    api::{self, ProxmoxGuest, ProxmoxGuestStatus},
    cli::oneshot::{self, MemoryStatus},
    providers::pve::{GuestKind, Params, PveApi},
    reconcile::ownership::Identity,
    reconcile::proxmox_guest::{self, GuestCtx, GuestObject},
};
use serde_json::json;

mod support {
    pub mod guest_world;
    pub mod pve_permissions;
}

use support::guest_world::*;

fn stalled(r: &oneshot::Applied) -> (String, String) {
    let c = api::find_condition(&r.status.conditions, api::CONDITION_STALLED).expect("Stalled condition");
    assert_eq!(c.status, "True", "{c:?}");
    (c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn what_a_spec_references_is_checked_on_the_node_before_creating() {
    let w = world().await;
    let creates = |w: &World| {
        let c = w.sim.calls();
        c.get("POST /nodes/{node}/lxc").copied().unwrap_or(0) + c.get("POST /nodes/{node}/qemu").copied().unwrap_or(0)
    };
    let mut ct = example("jellyfin");
    ct.spec.source.os_template = Some("local:vztmpl/missing.tar.zst".into());
    ct.spec.network[1].bridge = "vmbr9".into();
    ct.spec.mounts[0].storage = Some("local".into());
    let (reason, msg) = stalled(&apply(&w, &ct).await);
    assert_eq!(reason, "MissingReference");
    for part in [
        "container template 'local:vztmpl/missing.tar.zst' is not on storage 'local' of node",
        "bridge 'vmbr9' (net1) does not exist on node",
        "storage 'local' (mount mp0) does not take content 'rootdir'",
    ] {
        assert!(msg.contains(part), "{part:?} missing in {msg}");
    }
    let mut vm = example("lab-installer");
    vm.spec.source.iso.as_mut().unwrap().image = "local:iso/nope.iso".into();
    let (reason, msg) = stalled(&apply(&w, &vm).await);
    assert_eq!(reason, "MissingReference");
    assert!(msg.contains("ISO image 'local:iso/nope.iso' is not on storage 'local'"), "{msg}");
    let mut lost = example("web01");
    lost.spec.node = Some("pve9".into());
    lost.spec.allowed_nodes.clear();
    let (reason, msg) = stalled(&apply(&w, &lost).await);
    assert_eq!(reason, "NodeNotFound");
    assert!(msg.contains("node 'pve9' is not in the cluster (it has pve1, pve2, pve3)"), "{msg}");
    assert_eq!(creates(&w), 0, "nothing was created");
    assert!(w.sim.guests().is_empty());

    // What was missing shows up on the node: the next attempt creates the guest.
    w.sim.add_volume("local:vztmpl/missing.tar.zst");
    w.sim.add_bridge("vmbr9");
    ct.spec.mounts[0].storage = Some("tank".into());
    let r = apply(&w, &ct).await;
    assert!(ready(&r.status), "{:?} {:?}", r.error, r.status.conditions);
    assert_eq!(creates(&w), 1);
}

#[test]
fn the_simulator_fails_a_start_on_a_missing_bridge_as_pve_does() {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let w = world().await;
        // Bypass the operator's check: the config write is accepted, the start task fails.
        let client = &w.engine.providers.pve["default"];
        let params: Params = vec![
            ("vmid".into(), "150".into()),
            ("ostemplate".into(), "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into()),
            ("rootfs".into(), "local-lvm:4".into()),
            ("net0".into(), "name=eth0,bridge=vmbr9,ip=dhcp".into()),
        ];
        let created = client.create("pve1", GuestKind::Lxc, params).await.unwrap();
        assert!(client.task_status(&created).await.unwrap().failure().is_none());
        let started = client.power("pve1", GuestKind::Lxc, 150, "start").await.unwrap();
        let st = client.task_status(&started).await.unwrap();
        assert_eq!(st.failure(), Some("bridge 'vmbr9' does not exist"));
    });
}

#[tokio::test]
async fn addresses_are_reported_per_nic_and_the_first_nic_is_the_default() {
    let w = world().await;
    let r = apply(&w, &example("jellyfin")).await;
    assert!(ready(&r.status), "{:?}", r.status.conditions);
    let ifs = &r.status.interfaces;
    assert_eq!(ifs.iter().map(|i| i.slot.as_str()).collect::<Vec<_>>(), ["net0", "net1"]);
    assert_eq!(ifs[0].ips, ["10.5.0.50"]);
    assert_eq!(ifs[1].ips.len(), 1, "the storage NIC has its own (DHCP) address");
    assert_ne!(ifs[1].ips, ifs[0].ips);
    assert_eq!(
        r.status.addresses(None),
        ["10.5.0.50"],
        "the storage address is not published by default"
    );
    assert_eq!(r.status.addresses(Some("net1")), ifs[1].ips);
    assert_eq!(r.status.ips.len(), 2);
}

/// Agent calls by outcome.
fn agent_calls(w: &World, outcome: &str) -> i64 {
    let text = w.metrics.render();
    text.lines()
        .filter(|l| l.contains("op=\"guest_interfaces\"") && l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}

/// Reconcile a Ready guest as the controller would (sleeping the requeue it
/// asks for) until its addresses are known.
async fn until_addresses(w: &World, g: &ProxmoxGuest, status: ProxmoxGuestStatus) -> ProxmoxGuestStatus {
    let ctx = GuestCtx::new(w.engine.env(), "default").unwrap();
    let id = Identity::of(g);
    let sink = MemoryStatus::default();
    *sink.0.lock().unwrap() = status;
    let spec = g.effective_spec();
    loop {
        let status = sink.0.lock().unwrap().clone();
        if !status.ips.is_empty() {
            return status;
        }
        let obj = GuestObject {
            id: &id,
            spec: &spec,
            status,
            generation: Some(1),
            ci_password: None,
        };
        let out = proxmox_guest::reconcile(&ctx, obj, &sink).await.unwrap();
        assert!(
            out.requeue < Duration::from_secs(60),
            "comes back for the addresses soon: {:?}",
            out.requeue
        );
        *sink.0.lock().unwrap() = out.status;
        tokio::time::sleep(out.requeue).await;
    }
}

#[tokio::test]
async fn the_agent_is_asked_once_the_guest_has_booted() {
    // Agents answer 2 s after boot and the operator waits that long: no call fails.
    let w = world_with(Duration::from_secs(2), None).await;
    let g = example("web01");
    let r = apply(&w, &g).await;
    assert!(ready(&r.status), "{:?}", r.status.conditions);
    let s = until_addresses(&w, &g, r.status).await;
    assert!(!s.interfaces.is_empty() && !s.interfaces[0].ips.is_empty(), "{s:?}");
    assert_eq!(agent_calls(&w, "not_ready"), 0, "no question before the agent could answer");
    assert_eq!(agent_calls(&w, "ok"), 1);
}

#[tokio::test]
async fn a_silent_agent_is_asked_again_after_a_pause_not_counted_as_an_error() {
    // The operator is told to ask at once, but the agent needs 2 s: after the
    // first "not running" it pauses 5 s, long enough.
    let w = world_with(Duration::from_secs(2), Some(Duration::ZERO)).await;
    let g = example("web01");
    let r = apply(&w, &g).await;
    assert!(ready(&r.status), "{:?}", r.status.conditions);
    let s = until_addresses(&w, &g, r.status).await;
    assert!(!s.ips.is_empty());
    assert!(
        agent_calls(&w, "not_ready") <= 1,
        "{} failing agent calls",
        agent_calls(&w, "not_ready")
    );
    assert_eq!(agent_calls(&w, "error"), 0, "a booting guest is not an error");
}

#[tokio::test]
async fn the_readme_role_grants_every_call_the_operator_makes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("pveum role add HomelabOperator -privs "))
        .expect("README's pveum role command");
    let privs: std::collections::BTreeSet<String> = line.split('"').nth(1).unwrap().split_whitespace().map(str::to_string).collect();
    // Everything the operator does: create (clone, ISO, template), read, edit with
    // a reboot and a resize, firewall, snapshot, delete.
    let w = world().await;
    let mut applied = vec![];
    for mut g in examples() {
        g.spec.update_policy = api::ConfigUpdatePolicy::RebootIfNeeded;
        g.spec.safety = Some(serde_json::from_value(json!({"snapshotBeforeChange": true})).unwrap());
        let first = apply(&w, &g).await;
        assert!(ready(&first.status), "{:?}", first.status.conditions);
        g.spec.cpu.cores += 1;
        if let Some(d) = g.spec.disks.first_mut() {
            d.size_gib += 1;
        }
        g.status = Some(first.status);
        let second = apply(&w, &g).await;
        assert!(ready(&second.status), "{:?}", second.status.conditions);
        g.spec.protection = false;
        g.spec.deletion_policy = api::DeletionPolicy::Delete;
        applied.push((g, second.status));
    }
    for (g, status) in applied {
        delete(&w, &g, status).await.unwrap();
    }
    let calls: Vec<String> = w.sim.calls().into_keys().collect();
    for wanted in [
        "POST /nodes/{node}/qemu/{vmid}/clone",
        "POST /nodes/{node}/lxc",
        "PUT /nodes/{node}/lxc/{vmid}/resize",
    ] {
        assert!(calls.contains(&wanted.to_string()), "{wanted} not exercised: {calls:?}");
    }
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("tests/data/pve-api-subset.json")).unwrap()).unwrap();
    let unmet = support::pve_permissions::unmet(&schema, &calls, &privs);
    assert!(unmet.is_empty(), "the README's role lacks:\n{}", unmet.join("\n"));
}

/// Device passthrough as homelabs use it: a container gets the GPU's render
/// node (hardware transcoding), a VM a USB stick by id and a Zigbee dongle by
/// resource mapping. Proxmox takes them at creation, an edit converges, and a
/// second pass writes nothing.
#[tokio::test]
async fn devices_and_usb_are_passed_through_and_kept() {
    let w = world().await;
    let mut ct = example("jellyfin");
    ct.spec.devices = vec![serde_yaml_ng::from_str("{slot: dev0, path: /dev/dri/renderD128, gid: 104, mode: \"0660\"}").unwrap()];
    let r = apply(&w, &ct).await;
    assert!(ready(&r.status), "{:?} {:?}", r.error, r.status.conditions);
    let vmid = r.status.vmid.unwrap();
    let on_sim = |key: &str| w.sim.guests().into_iter().find(|g| g.vmid == vmid).and_then(|g| g.get(key));
    assert_eq!(on_sim("dev0").as_deref(), Some("path=/dev/dri/renderD128,gid=104,mode=0660"));

    let mut vm = example("lab-installer");
    vm.spec.usb = vec![
        serde_yaml_ng::from_str("{slot: usb0, host: \"1a86:7523\"}").unwrap(),
        serde_yaml_ng::from_str("{slot: usb1, mapping: zigbee, usb3: true}").unwrap(),
    ];
    let v = apply(&w, &vm).await;
    assert!(ready(&v.status), "{:?} {:?}", v.error, v.status.conditions);
    let vm_cfg = |key: &str| {
        w.sim
            .guests()
            .into_iter()
            .find(|g| Some(g.vmid) == v.status.vmid)
            .and_then(|g| g.get(key))
    };
    assert_eq!(vm_cfg("usb0").as_deref(), Some("host=1a86:7523"));
    assert_eq!(vm_cfg("usb1").as_deref(), Some("mapping=zigbee,usb3=1"));

    // An edit converges: devices apply at start, so the container is rebooted for it.
    ct.status = Some(r.status);
    ct.spec.devices[0].mode = Some("0666".into());
    ct.spec.update_policy = api::ConfigUpdatePolicy::RebootIfNeeded;
    let r = apply(&w, &ct).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    let dev0 = on_sim("dev0").unwrap_or_default();
    assert!(dev0.contains("mode=0666"), "{dev0}");
    // Nothing left to write.
    w.sim.reset_calls();
    ct.status = Some(r.status);
    let again = apply(&w, &ct).await;
    assert!(again.error.is_none());
    let writes: Vec<String> = w.sim.calls().into_keys().filter(|k| !k.starts_with("GET")).collect();
    assert!(writes.is_empty(), "{writes:?}");
}

/// Fields that must agree (a gateway outside its NIC's subnet, a nameserver
/// that is no address, an SSH key PVE cannot parse) are found before any call
/// to Proxmox: nothing is created or changed, and the error names each field.
#[tokio::test]
async fn inconsistent_fields_are_refused_before_anything_is_written() {
    let w = world().await;
    let mut vm = example("web01");
    vm.spec.network[0].gateway4 = Some("10.5.9.1".into());
    let ci = vm.spec.cloud_init.as_mut().unwrap();
    ci.nameserver = Some("dns.lan".into());
    ci.ssh_keys = vec!["ssh-ed25519 AAAA-not-a-key me@laptop".into()];
    w.sim.reset_calls();
    let r = apply(&w, &vm).await;
    let error = r.error.expect("refused");
    for words in [
        "spec.network[0].gateway4 10.5.9.1 is outside 10.5.0.0/24",
        "spec.cloudInit.nameserver: \"dns.lan\" is not an IP address",
        "spec.cloudInit.sshKeys[0]: the key data is not base64",
    ] {
        assert!(error.contains(words), "{error}");
    }
    assert_eq!(w.sim.total_calls(), 0, "nothing was asked of Proxmox: {:?}", w.sim.calls());
}

/// A clone whose spec asks for a disk smaller than the template's would be
/// stuck the moment it exists (disks never shrink): the template is read
/// before cloning, and nothing is cloned.
#[tokio::test]
async fn a_clone_smaller_than_its_template_is_refused_before_cloning() {
    let w = world().await;
    let mut vm = example("web01");
    vm.spec.disks[0].size_gib = 2; // the template's scsi0 is 4G
    let r = apply(&w, &vm).await;
    let (reason, msg) = stalled(&r);
    assert_eq!(reason, "DiskShrinkRefused");
    assert!(
        msg.contains("disk scsi0 asks for 2 GiB but the template's scsi0 is 4G") && msg.contains("at least 4"),
        "{msg}"
    );
    assert_eq!(
        w.sim.calls().get("POST /nodes/{node}/qemu/{vmid}/clone"),
        None,
        "nothing was cloned"
    );
    assert!(w.sim.guests().iter().all(|g| g.template), "no guest was made");
}
