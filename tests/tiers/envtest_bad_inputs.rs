//! Bad inputs only the live systems can judge, on a real API server: one
//! case per class and kind. Each is admitted (the schema cannot know), then
//! ends Stalled or Degraded with a message naming what to fix; nothing is
//! created on the simulators, no write they refuse is sent, and the operator
//! does not loop on them.

use std::time::Duration;

use homelab_operator::api::{BackupPolicy, DnsRecord, MonitorTarget, ProxmoxGuest, ProxyHost, UpdatePolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api,
    api::{DynamicObject, PostParams},
};
use serde_json::json;

use super::support::envtest_world::*;

/// A resource of any kind, its name, and words its Stalled or Degraded message must hold.
struct Case {
    manifest: serde_json::Value,
    words: &'static [&'static str],
}

fn guest(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "homelab.dev/v1alpha1", "kind": "ProxmoxGuest", "metadata": {"name": name}, "spec": spec})
}

fn ct(extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "type": "lxc", "source": {"osTemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"},
        "memoryMiB": 512, "disks": [{"slot": "rootfs", "storage": "local-lvm", "sizeGiB": 8}],
        "network": [{"slot": "net0", "bridge": "vmbr0", "ipv4": "dhcp"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

fn cases() -> Vec<Case> {
    let of = |kind: &str, name: &str, spec: serde_json::Value| json!({"apiVersion": "homelab.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec});
    vec![
        Case {
            manifest: guest(
                "no-storage",
                ct(json!({"disks": [{"slot": "rootfs", "storage": "nosuch", "sizeGiB": 8}]})),
            ),
            words: &["nosuch"],
        },
        Case {
            manifest: guest(
                "no-bridge",
                ct(json!({"network": [{"slot": "net0", "bridge": "vmbr9", "ipv4": "dhcp"}]})),
            ),
            words: &["vmbr9"],
        },
        Case {
            manifest: guest("no-node", ct(json!({"node": "pve9"}))),
            words: &["pve9"],
        },
        Case {
            manifest: guest(
                "no-ostemplate",
                ct(json!({"source": {"osTemplate": "local:vztmpl/missing_1.0_amd64.tar.zst"}})),
            ),
            words: &["missing_1.0_amd64.tar.zst"],
        },
        Case {
            manifest: guest(
                "far-gateway",
                ct(json!({"network": [{"slot": "net0", "bridge": "vmbr0", "ipv4": "10.5.0.40/24", "gateway4": "10.9.9.1"}]})),
            ),
            words: &["gateway4", "10.9.9.1"],
        },
        Case {
            manifest: guest(
                "no-template",
                json!({"type": "qemu", "source": {"clone": {"templateName": "nope-cloud"}}, "memoryMiB": 1024}),
            ),
            words: &["nope-cloud"],
        },
        Case {
            manifest: guest(
                "shrunk-clone",
                json!({"type": "qemu", "source": {"clone": {"templateName": "debian-13-cloud"}}, "memoryMiB": 1024,
                       "disks": [{"slot": "scsi0", "storage": "local-lvm", "sizeGiB": 2}]}),
            ),
            words: &["scsi0", "4G"],
        },
        Case {
            manifest: of(
                "DnsRecord",
                "no-zone",
                json!({"zone": "nosuch.arpa", "name": "www", "type": "A", "values": ["10.5.0.9"]}),
            ),
            words: &["nosuch.arpa"],
        },
        Case {
            manifest: of(
                "BackupPolicy",
                "no-backup-storage",
                json!({"vmids": [4242], "schedule": "02:30", "storage": "nosuch"}),
            ),
            words: &["spec.storage", "nosuch", "does not exist"],
        },
        Case {
            manifest: of(
                "BackupPolicy",
                "images-storage",
                json!({"vmids": [4242], "schedule": "02:30", "storage": "local-lvm"}),
            ),
            words: &["spec.storage", "local-lvm", "does not hold backups"],
        },
        Case {
            // Only nginx can judge a configuration: NPM takes it and reports nginx offline.
            manifest: of(
                "ProxyHost",
                "bad-nginx",
                json!({"domains": ["bad.home.arpa"], "forward": {"host": "10.5.0.9", "port": 80},
                       "advancedConfig": "invalid_directive on;"}),
            ),
            words: &["nginx", "unknown directive \"invalid_directive\""],
        },
        Case {
            manifest: of(
                "MonitorTarget",
                "no-channel",
                json!({"tcp": {"host": "127.0.0.1", "port": 9}, "notify": {"channels": ["nowhere"]}}),
            ),
            words: &["nowhere"],
        },
        Case {
            manifest: of(
                "UpdatePolicy",
                "no-ssh-secret",
                json!({"selector": {"matchLabels": {"updates": "none"}},
                       "ssh": {"privateKeySecret": {"name": "ssh", "key": "id"}, "knownHostsSecret": {"name": "ssh", "key": "known"}}}),
            ),
            words: &["spec.ssh.privateKeySecret", "rbac.secretNamespaces"],
        },
    ]
}

/// The Stalled or Degraded condition that is True, if any.
fn problem(obj: &DynamicObject) -> Option<Condition> {
    let conditions: Vec<Condition> = serde_json::from_value(obj.data["status"]["conditions"].clone()).ok()?;
    conditions
        .into_iter()
        .find(|c| (c.type_ == "Stalled" || c.type_ == "Degraded") && c.status == "True")
}

fn api_for(client: &kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let resource = match kind {
        "ProxmoxGuest" => kube::discovery::ApiResource::erase::<ProxmoxGuest>(&()),
        "DnsRecord" => kube::discovery::ApiResource::erase::<DnsRecord>(&()),
        "BackupPolicy" => kube::discovery::ApiResource::erase::<BackupPolicy>(&()),
        "MonitorTarget" => kube::discovery::ApiResource::erase::<MonitorTarget>(&()),
        "ProxyHost" => kube::discovery::ApiResource::erase::<ProxyHost>(&()),
        "UpdatePolicy" => kube::discovery::ApiResource::erase::<UpdatePolicy>(&()),
        other => panic!("no case kind {other}"),
    };
    Api::namespaced_with(client.clone(), ns, &resource)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_only_the_servers_can_judge_stall_with_their_field_and_create_nothing() {
    let plane = installed();
    let client = plane.admin().await;
    let ns = namespace(&client, "bad-inputs").await;
    let w = world(Duration::from_millis(100)).await;
    let guests_before = w.sim.guests().len();
    let op = Operator::start(plane, &w, &ns, &["--no-leader-election"], "bad-inputs");
    for case in cases() {
        let kind = case.manifest["kind"].as_str().unwrap().to_string();
        let obj: DynamicObject = serde_json::from_value(case.manifest.clone()).unwrap();
        api_for(&client, &ns, &kind).create(&PostParams::default(), &obj).await.unwrap();
    }
    for case in cases() {
        let kind = case.manifest["kind"].as_str().unwrap();
        let name = case.manifest["metadata"]["name"].as_str().unwrap();
        let api = api_for(&client, &ns, kind);
        let obj = wait_for(&api, name, "Stalled or Degraded", &op, |o| problem(o).is_some()).await;
        let c = problem(&obj).unwrap();
        for word in case.words {
            assert!(c.message.contains(word), "{kind} {name}: {word:?} not in {c:?}");
        }
        assert!(!c.message.contains("ApiError") && !c.message.contains("finalizer:"), "{c:?}");
    }
    assert_eq!(w.sim.guests().len(), guests_before, "no guest made, half or whole");
    let refused: Vec<String> = w._servers.iter().flat_map(|s| s.refused_writes()).collect();
    assert!(refused.is_empty(), "writes the simulators refused: {refused:?}");
    // A measurement window, not a timing assumption: a hot loop shows up as
    // calls; a slow machine only makes the count smaller.
    let calls = w.sim.total_calls();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let more = w.sim.total_calls() - calls;
    assert!(
        more <= 6,
        "{more} PVE calls while everything waits for a person: {:?}",
        w.sim.calls()
    );
    assert_eq!(w.sim.guests().len(), guests_before);
}
