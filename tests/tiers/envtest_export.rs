//! Moving in on a real API server: a homelab made by hand is exported, the
//! files are applied with kubectl, the operator adopts everything, and the
//! simulators' write counters show that nothing but the ownership marks was written.

use std::{collections::BTreeMap, process::Command, time::Duration};

use homelab_operator::{
    api::{DnsRecord, ProxmoxGuest, ProxyHost},
    sim::{pve::SimGuest, technitium::SimRecord},
};
use kube::Api;
use serde_json::json;

use super::support::envtest_world::*;

/// A container and a VM as the web UI leaves them, an NPM host, a DNS record.
fn hand_made(w: &World) {
    let cfg = |pairs: &[(&str, serde_json::Value)]| -> BTreeMap<String, serde_json::Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    };
    let mut ct = SimGuest::new(
        150,
        "lxc",
        "pve1",
        cfg(&[
            ("hostname", json!("pihole")),
            ("memory", json!(512)),
            ("swap", json!(512)),
            ("cores", json!(1)),
            ("rootfs", json!("local-lvm:subvol-150-disk-0,size=4G")),
            (
                "net0",
                json!("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:15:00,ip=10.0.0.53/24,gw=10.0.0.1"),
            ),
            ("unprivileged", json!(1)),
            ("onboot", json!(1)),
        ]),
        false,
    );
    ct.running = true;
    w.sim.add_guest(ct);
    w.sim.add_guest(SimGuest::new(
        151,
        "qemu",
        "pve2",
        cfg(&[
            ("name", json!("homeassistant")),
            ("memory", json!(4096)),
            ("cores", json!(2)),
            ("scsihw", json!("virtio-scsi-single")),
            ("scsi0", json!("local-lvm:vm-151-disk-0,iothread=1,size=32G")),
            ("net0", json!("virtio=BC:24:11:00:15:01,bridge=vmbr0")),
            ("usb0", json!("host=10c4:ea60")),
        ]),
        false,
    ));
    w.npm.add_host(json!({
        "domain_names": ["ha.home.arpa"], "forward_scheme": "http", "forward_host": "10.0.0.60", "forward_port": 8123,
        "access_list_id": 0, "certificate_id": 0, "ssl_forced": false, "caching_enabled": false, "block_exploits": true,
        "advanced_config": "", "meta": {"letsencrypt_agree": false, "dns_challenge": false}, "allow_websocket_upgrade": true,
        "http2_support": false, "hsts_enabled": false, "enabled": true, "locations": []
    }));
    w.dns.add_record(
        "home.arpa",
        SimRecord {
            name: "pihole.home.arpa".into(),
            rtype: "A".into(),
            ttl: 3600,
            comments: None,
            rdata: json!({"ipAddress": "10.0.0.53"}),
        },
    );
}

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
    hand_made(&w);
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
        export.status.success() && text.contains("Export: 2 guests, 1 proxy hosts, 1 DNS records"),
        "{text}"
    );
    let (ok, applied) = plane.kubectl(&["apply", "--server-side", "-R", "-f", out.to_str().unwrap()]);
    assert!(ok, "{applied}");
    w.sim.reset_calls();
    let op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "moving-in");

    let guests: Api<ProxmoxGuest> = Api::namespaced(client.clone(), &ns);
    for name in ["pihole", "homeassistant"] {
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
    wait_for(&records, "pihole-a", "Ready", &op, |r| {
        ready(r.status.as_ref().map(|s| &s.conditions))
    })
    .await;

    // Only the marks: one config write per guest, one host update, one record rewrite.
    assert_eq!(
        writes(w.sim.calls()),
        vec![
            ("POST /nodes/{node}/qemu/{vmid}/config".to_string(), 1),
            ("PUT /nodes/{node}/lxc/{vmid}/config".to_string(), 1)
        ],
        "{}",
        op.logs()
    );
    assert!(sim_config(&w, 150, "tags").contains("hlo-") && sim_config(&w, 151, "tags").contains("hlo-"));
    assert_eq!(sim_config(&w, 151, "usb0"), "host=10c4:ea60", "the USB device is kept");
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
    assert_eq!(dns_writes, vec![("/api/zones/records/add".to_string(), 1)], "{:?}", w.dns.calls());
    assert!(w.sim.guest(150).unwrap().running, "the container was never restarted");
}
