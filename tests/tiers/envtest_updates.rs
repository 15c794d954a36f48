//! UpdatePolicy on a real API server: a policy over two guests updates one
//! and rolls the other back after its monitor stays Down, notifying once;
//! then the operator is killed (SIGKILL) in the middle of an update and the
//! next one resumes it without running it twice or leaving a snapshot behind.

use std::time::Duration;

use homelab_operator::{
    api::{MonitorTarget, ProxmoxGuest, UpdatePolicy, UpdateResult, UpdateStep},
    sim::pve::{SimPackage, stand_in_web_server},
};
use kube::{Api, api::PostParams};
use serde_json::json;

use super::support::envtest_world::*;

fn vm(name: &str) -> ProxmoxGuest {
    serde_json::from_value(json!({
        "apiVersion": "homelab.dev/v1alpha1", "kind": "ProxmoxGuest",
        "metadata": {"name": name, "labels": {"updates": "weekly"}},
        "spec": {"type": "qemu", "source": {"clone": {"templateName": "debian-13-cloud"}}, "memoryMiB": 1024,
                 "network": [{"slot": "net0", "bridge": "vmbr0", "ipv4": "dhcp"}], "deletionPolicy": "Delete"},
    }))
    .unwrap()
}

fn member_run(p: &UpdatePolicy, name: &str) -> Option<homelab_operator::api::MemberRun> {
    p.status.as_ref()?.members.iter().find(|m| m.name == name)?.last_run.clone()
}

fn finished(p: &UpdatePolicy, request: &str) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.run.as_ref())
        .is_some_and(|r| r.request == request && r.finished.is_some())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_updates_one_guest_rolls_the_other_back_and_resumes_after_a_kill() {
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "updates").await;
    let w = world(Duration::from_millis(100)).await;
    let mut op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "updates-1");
    let guests: Api<ProxmoxGuest> = Api::namespaced(client.clone(), &ns);
    let monitors: Api<MonitorTarget> = Api::namespaced(client.clone(), &ns);
    let mut vmids = vec![];
    for name in ["app1", "app2"] {
        guests.create(&PostParams::default(), &vm(name)).await.unwrap();
        let g = wait_for(&guests, name, "Ready", &op, |g| is_true(g, "Ready")).await;
        let vmid = g.status.unwrap().vmid.unwrap();
        vmids.push(vmid);
        let addr = stand_in_web_server(w.sim.clone(), vmid, std::net::Ipv4Addr::LOCALHOST.into())
            .await
            .unwrap();
        let m: MonitorTarget = serde_json::from_value(json!({
            "apiVersion": "homelab.dev/v1alpha1", "kind": "MonitorTarget",
            "metadata": {"name": format!("{name}-http")},
            "spec": {"target": {"kind": "ProxmoxGuest", "name": name}, "http": {"url": format!("http://{addr}/")}, "intervalSeconds": 30},
        }))
        .unwrap();
        monitors.create(&PostParams::default(), &m).await.unwrap();
    }
    // A guest naming an UpdatePolicy the namespace lacks says so (it is not updated), not silence.
    guests
        .create(&PostParams::default(), &lxc("lab", json!({"updates": {"policy": "monthly"}})))
        .await
        .unwrap();
    let lab = wait_for(&guests, "lab", "UpdatePolicyNotFound", &op, |g| {
        g.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Degraded"))
            .is_some_and(|c| c.reason == "UpdatePolicyNotFound")
    })
    .await;
    let degraded = lab.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Degraded").unwrap();
    assert!(
        degraded.message.contains("UpdatePolicy \"monthly\"") && degraded.message.contains("not updated"),
        "{degraded:?}"
    );
    // The policy appearing clears it at once (the guest controller watches policies), not at the next resync.
    let policies: Api<UpdatePolicy> = Api::namespaced(client.clone(), &ns);
    let monthly: UpdatePolicy = serde_json::from_value(json!({
        "apiVersion": "homelab.dev/v1alpha1", "kind": "UpdatePolicy", "metadata": {"name": "monthly"}, "spec": {"mode": "Check"},
    }))
    .unwrap();
    policies.create(&PostParams::default(), &monthly).await.unwrap();
    wait_for(&guests, "lab", "no longer UpdatePolicyNotFound", &op, |g| {
        g.status
            .as_ref()
            .is_some_and(|s| !s.conditions.iter().any(|c| c.type_ == "Degraded" && c.status == "True"))
    })
    .await;
    w.sim.edit_os(vmids[1], |os| os.update_breaks_service = true);
    let policy: UpdatePolicy = serde_json::from_value(json!({
        "apiVersion": "homelab.dev/v1alpha1", "kind": "UpdatePolicy",
        "metadata": {"name": "weekly", "annotations": {"homelab.dev/update-now": "1"}},
        "spec": {"selector": {"matchLabels": {"updates": "weekly"}}, "mode": "Apply", "stopOnFailure": false,
                 "validation": {"timeoutSeconds": 5}, "keepSnapshot": "0h", "notify": ["telegram"]},
    }))
    .unwrap();
    policies.create(&PostParams::default(), &policy).await.unwrap();
    let p = wait_for(&policies, "weekly", "through run 1", &op, |p| finished(p, "1")).await;
    assert_eq!(member_run(&p, "app1").and_then(|r| r.result), Some(UpdateResult::Updated));
    let r2 = member_run(&p, "app2").unwrap();
    assert_eq!(r2.result, Some(UpdateResult::RolledBack), "{r2:?}");
    assert!(r2.reason.unwrap_or_default().contains("app2-http is Down"));
    let degraded = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert!(
        degraded.status == "True" && degraded.message.starts_with("app2: validation"),
        "{degraded:?}"
    );
    let g2 = w.sim.guest(vmids[1]).unwrap();
    assert!(g2.os.service_ok && g2.os.pending.len() == 3, "app2 back at its snapshot");
    let told = w.chat.received();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].text.contains("1 updated, 1 rolled back"), "{}", told[0].text);
    // Snapshots deleted once the run ended (keepSnapshot 0h).
    let p = wait_for(&policies, "weekly", "without kept snapshots", &op, |p| {
        p.status.as_ref().is_some_and(|s| s.snapshots.is_empty())
    })
    .await;
    assert!(vmids.iter().all(|v| w.sim.guest(*v).unwrap().snapshots.is_empty()));

    // The README's `kubectl get upd` table, with the columns it shows.
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let shown = readme
        .lines()
        .skip_while(|l| *l != "$ kubectl get upd")
        .nth(1)
        .expect("README table");
    let (ok, out) = plane.kubectl(&["-n", &ns, "get", "upd"]);
    assert!(ok, "{out}");
    let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, shown.split_whitespace().collect::<Vec<_>>(), "{out}");
    assert!(out.contains("1 updated, 1 rolled back"), "{out}");

    // Run 2: only app1 has updates, and they take a while; the operator is killed mid-update.
    w.sim.edit_os(vmids[1], |os| os.pending.clear());
    w.sim.edit_os(vmids[0], |os| {
        os.pending = vec![SimPackage::new("tzdata", "2025b-4", "2026a-1", false)];
        os.update_time = Some(Duration::from_secs(6));
    });
    let snapshots_before = snapshot_posts(&w);
    drop(p);
    // "Update now", exactly as the README says it.
    let readme_command = readme
        .split('`')
        .find(|s| s.starts_with("kubectl annotate upd weekly homelab.dev/update-now="))
        .expect("README's update-now command");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("{readme_command} -n {ns}"))
        .env("KUBECONFIG", &plane.admin_kubeconfig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{readme_command}: {}", String::from_utf8_lossy(&out.stderr));
    wait_for(&policies, "weekly", "updating app1", &op, |p| {
        member_run(p, "app1").is_some_and(|r| r.step == UpdateStep::Update && r.launched)
    })
    .await;
    op.kill9();
    let op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "updates-2");
    let p = wait_for(&policies, "weekly", "through run 2", &op, |p| {
        p.status
            .as_ref()
            .and_then(|s| s.run.as_ref())
            .is_some_and(|r| r.request.parse::<u64>().is_ok_and(|v| v > 1) && r.finished.is_some())
    })
    .await;
    let r1 = member_run(&p, "app1").unwrap();
    assert_eq!(r1.result, Some(UpdateResult::Updated), "{r1:?}");
    let g1 = w.sim.guest(vmids[0]).unwrap();
    assert_eq!(g1.os.updates_run, 2, "one update per run, none repeated after the kill");
    assert_eq!(snapshot_posts(&w) - snapshots_before, 1, "one snapshot taken in run 2");
    wait_for(&policies, "weekly", "without kept snapshots", &op, |p| {
        p.status.as_ref().is_some_and(|s| s.snapshots.is_empty())
    })
    .await;
    assert!(w.sim.guest(vmids[0]).unwrap().snapshots.is_empty(), "no snapshot left behind");
    assert_eq!(w.chat.received().len(), 2, "one message per run");
}

fn snapshot_posts(w: &World) -> u64 {
    w.sim.calls().get("POST /nodes/{node}/qemu/{vmid}/snapshot").copied().unwrap_or(0)
}
