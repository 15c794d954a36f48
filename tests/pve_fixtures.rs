//! The provider's types decode every example body of the PVE contract
//! (copied under tests/data/fixtures/pve), including the awkward ones.

use std::path::Path;

use homelab_operator::providers::pve::{
    ClusterResource, PendingEntry, TaskStatus,
    codec::{PropertyString, Upid, lenient_u64},
};

fn fixture(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures/pve").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

#[test]
fn cluster_resources_decode_with_mixed_types() {
    let v = fixture("cluster-resources-vm.json");
    let list: Vec<ClusterResource> = serde_json::from_value(v["data"].clone()).unwrap();
    assert_eq!(list.len(), 4);
    assert!(list.iter().any(|r| r.vmid == 9000 && r.template));
    assert_eq!(list[0].tag_list(), vec!["homelab", "web"]);
    assert_eq!(list[1].lock.as_deref(), Some("backup"));
}

#[test]
fn nextid_is_a_string() {
    assert_eq!(lenient_u64(&fixture("cluster-nextid.json")["data"]), Some(101));
}

#[test]
fn task_states_decode() {
    let ok: TaskStatus = serde_json::from_value(fixture("task-status-ok.json")["data"].clone()).unwrap();
    assert_eq!(ok.failure(), None);
    let warn: TaskStatus = serde_json::from_value(fixture("task-status-warnings.json")["data"].clone()).unwrap();
    assert_eq!(warn.failure(), None, "WARNINGS: n is success");
    let err: TaskStatus = serde_json::from_value(fixture("task-status-error.json")["data"].clone()).unwrap();
    assert!(err.failure().is_some());
    let running: TaskStatus = serde_json::from_value(fixture("task-status-running.json")["data"].clone()).unwrap();
    assert!(running.is_running());
    assert!(Upid::parse(fixture("task-started.json")["data"].as_str().unwrap()).is_some());
}

#[test]
fn config_property_strings_decode() {
    let cfg = fixture("qemu-config.json")["data"].clone();
    let net0 = PropertyString::parse(cfg["net0"].as_str().unwrap(), "model");
    assert_eq!(net0.get("virtio"), Some("BC:24:11:5E:7A:01"));
    assert_eq!(net0.get("tag"), Some("10"));
    let lxc = fixture("lxc-config.json")["data"].clone();
    assert_eq!(lxc["memory"], 512, "LXC memory is a number");
    let rootfs = PropertyString::parse(lxc["rootfs"].as_str().unwrap(), "volume");
    assert_eq!(rootfs.get("size"), Some("8G"));
}

#[test]
fn pending_entries_decode() {
    let v = fixture("qemu-pending.json");
    let list: Vec<PendingEntry> = serde_json::from_value(v["data"].clone()).unwrap();
    assert!(list.iter().any(|e| e.pending.is_some()));
}
