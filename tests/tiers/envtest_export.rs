//! Moving in on a real API server: a homelab made by hand (the one `demo
//! --serve` adds) is exported, the files are applied with kubectl, the
//! operator adopts everything, and the simulators' write counters show that
//! nothing but the ownership marks was written.

use std::{collections::BTreeMap, process::Command, time::Duration};

use homelab_operator::{
    api::{BackupPolicy, DnsRecord, ProxmoxGuest, ProxyHost},
    sim::homelab,
};
use kube::Api;

use super::support::envtest_world::*;

/// Calls that change something, by endpoint.
fn writes(calls: BTreeMap<String, u64>) -> Vec<(String, u64)> {
    calls.into_iter().filter(|(k, _)| !k.starts_with("GET")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exported_homelab_is_adopted_on_the_cluster_with_only_the_marks_written() {
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "moving-in").await;
    let w = world(Duration::from_millis(200)).await;
    homelab::seed(&w.sim, &w.npm, &w.dns).unwrap();
    let out = w.dir.path().join("homelab");
    let export = Command::new(env!("CARGO_BIN_EXE_homelab-operator"))
        .args(["export", "--config"])
        .arg(&w.config)
        .args(["--namespace", &ns, "--zone", "home.arpa", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&export.stdout);
    assert!(
        export.status.success() && text.contains("Export: 3 guests, 1 backup jobs, 1 proxy hosts, 2 DNS records"),
        "{text}"
    );
    let (ok, applied) = plane.kubectl(&["apply", "--server-side", "-R", "-f", out.to_str().unwrap()]);
    assert!(ok, "{applied}");
    w.sim.reset_calls();
    let op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "moving-in");

    let guests: Api<ProxmoxGuest> = Api::namespaced(client.clone(), &ns);
    for name in ["pihole", "homeassistant", "jellyfin"] {
        wait_for(&guests, name, "Ready", &op, |g| is_true(g, "Ready")).await;
    }
    let ready = |c: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>| {
        c.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let hosts: Api<ProxyHost> = Api::namespaced(client.clone(), &ns);
    wait_for(&hosts, "ha-home-arpa", "Ready", &op, |h| {
        ready(h.status.as_ref().map(|s| &s.conditions))
    })
    .await;
    let records: Api<DnsRecord> = Api::namespaced(client.clone(), &ns);
    for name in ["pihole-a", "ha-a"] {
        wait_for(&records, name, "Ready", &op, |r| ready(r.status.as_ref().map(|s| &s.conditions))).await;
    }
    // The job's members by the label export put on the guests; their backups fresh.
    let policies: Api<BackupPolicy> = Api::namespaced(client.clone(), &ns);
    wait_for(&policies, "nightly-made-by-hand", "Ready", &op, |p| {
        ready(p.status.as_ref().map(|s| &s.conditions)) && p.status.as_ref().is_some_and(|s| s.member_count == 3)
    })
    .await;

    // Only the marks: one config write per guest and per job, one host update, one rewrite per record.
    assert_eq!(
        writes(w.sim.calls()),
        vec![
            ("POST /nodes/{node}/qemu/{vmid}/config".to_string(), 1),
            ("PUT /cluster/backup/{id}".to_string(), 1),
            ("PUT /nodes/{node}/lxc/{vmid}/config".to_string(), 2)
        ],
        "{}",
        op.logs()
    );
    assert!(homelab::VMIDS.iter().all(|v| sim_config(&w, *v, "tags").contains("hlo-")));
    assert_eq!(sim_config(&w, 900, "usb0"), "host=10c4:ea60", "the USB device is kept");
    assert_eq!(
        sim_config(&w, 902, "dev0"),
        "/dev/dri/renderD128,gid=104,mode=0660",
        "the render node is kept"
    );
    // (Logging in to NPM, POST /tokens, changes nothing.)
    let npm_writes: Vec<(String, u64)> = writes(w.npm.calls()).into_iter().filter(|(k, _)| !k.ends_with("/tokens")).collect();
    assert_eq!(npm_writes, vec![("PUT /nginx/proxy-hosts/1".to_string(), 1)]);
    // Technitium's calls are counted by path: one add that rewrites the record with the mark.
    let dns_writes: Vec<(String, u64)> = w
        .dns
        .calls()
        .into_iter()
        .filter(|(k, _)| k.contains("/add") || k.contains("/update") || k.contains("/delete"))
        .collect();
    assert_eq!(dns_writes, vec![("/api/zones/records/add".to_string(), 2)], "{:?}", w.dns.calls());
    assert!(
        homelab::VMIDS.iter().all(|v| w.sim.guest(*v).unwrap().running),
        "no guest was ever restarted"
    );
}
