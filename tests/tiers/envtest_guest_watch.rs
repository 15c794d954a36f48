//! The one guest watch on a real API server: a guest's new address reaches
//! the DnsRecord, ProxyHost and MonitorTarget that target it (they learn of
//! it through the guest controller's watch and read the guest from its cache),
//! and a record whose guest is created after it waits, then follows.

use std::time::Duration;

use homelab_operator::api::{self, ProxmoxGuest};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::support::envtest_world::*;

fn nic(ip: &str) -> serde_json::Value {
    json!({"network": [{"slot": "net0", "bridge": "vmbr0", "ipv4": format!("{ip}/24"), "gateway": "10.0.40.1"}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guests_new_address_reaches_what_targets_it() {
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "follow").await;
    let w = world(Duration::from_millis(200)).await;
    // No drift requeues within the test: only a guest's change can move its record and host.
    let op = Operator::start(plane, &w, &ns, &["--no-leader-election", "--drift-interval", "600"], "follow");
    let guests: Api<ProxmoxGuest> = Api::namespaced(client.clone(), &ns);
    let records: Api<api::DnsRecord> = Api::namespaced(client.clone(), &ns);
    let proxies: Api<api::ProxyHost> = Api::namespaced(client.clone(), &ns);
    let object = |kind: &str, spec: serde_json::Value| json!({"apiVersion": "homelab.dev/v1alpha1", "kind": kind, "metadata": {"name": "app"}, "spec": spec});
    // The record comes first: it waits for its guest.
    let record = object(
        "DnsRecord",
        json!({"zone": "home.arpa", "name": "app", "type": "A", "target": {"name": "app"}}),
    );
    records
        .create(&PostParams::default(), &serde_json::from_value(record).unwrap())
        .await
        .unwrap();
    let proxy = object(
        "ProxyHost",
        json!({"domains": ["app.home.arpa"], "target": {"name": "app", "port": 8080}}),
    );
    proxies
        .create(&PostParams::default(), &serde_json::from_value(proxy).unwrap())
        .await
        .unwrap();
    guests.create(&PostParams::default(), &lxc("app", nic("10.0.40.20"))).await.unwrap();

    followed(&records, &proxies, &op, &w, "10.0.40.20").await;
    // The guest moves: its status changes, and the record and host follow.
    let patch = json!({"spec": nic("10.0.40.21")});
    guests.patch("app", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    followed(&records, &proxies, &op, &w, "10.0.40.21").await;
}

/// Wait until record and host `app` publish and forward to `ip`.
async fn followed(records: &Api<api::DnsRecord>, proxies: &Api<api::ProxyHost>, op: &Operator, w: &World, ip: &str) {
    let published = || {
        w.dns
            .records("app.home.arpa")
            .iter()
            .map(|r| r.rdata["ipAddress"].clone())
            .collect::<Vec<_>>()
    };
    let forwarded = || w.npm.hosts().iter().map(|h| h["forward_host"].clone()).collect::<Vec<_>>();
    wait_for(records, "app", &format!("published at {ip}"), op, |_| published() == [json!(ip)]).await;
    wait_for(proxies, "app", &format!("forwarding to {ip}"), op, |_| forwarded() == [json!(ip)]).await;
}
