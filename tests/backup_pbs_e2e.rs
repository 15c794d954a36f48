//! BackupPolicy with a Proxmox Backup Server behind its storage, over HTTPS to
//! both simulators: PBS jobs, verification state per member, constant call
//! counts, deletion, and restore tests that always leave no scratch guest.

use std::collections::BTreeMap;

use homelab_operator::{
    api::{BackupPolicySpec, BackupPolicyStatus},
    cli::oneshot::MemoryStatus,
    providers::pbs::JobKind,
    reconcile::backup_policy::{self, PolicyOutcome, freshness::Member},
    sim::pve::SimGuest,
};
use serde_json::json;
use support::backup_world::*;

mod support {
    pub mod backup_world;
}

const PBS: &str = "pbs: {endpoint: main, datastore: store1, prune: {schedule: daily}, verify: {schedule: 'sat 05:00', reverifyAfterDays: 30}, garbageCollection: {schedule: 'sun 04:00'}}\n";

/// A VM as the Proxmox UI makes one: a disk and a NIC.
fn vm(vmid: u32, name: &str) -> SimGuest {
    let config = BTreeMap::from([
        ("name".to_string(), json!(name)),
        ("memory".to_string(), json!("2048")),
        ("scsi0".to_string(), json!(format!("local-lvm:vm-{vmid}-disk-0,size=8G"))),
        (
            "net0".to_string(),
            json!(format!("virtio=BC:24:11:00:{:02X}:01,bridge=vmbr0", vmid % 256)),
        ),
    ]);
    let mut g = SimGuest::new(vmid, "qemu", "pve1", config, false);
    g.running = true;
    g
}

async fn back_up_now(w: &World, s: &BackupPolicySpec, members: Vec<Member>, value: &str) -> PolicyOutcome {
    let sink = MemoryStatus::default();
    let ask = Ask {
        backup_now: Some(value),
        ..Default::default()
    };
    let out = reconcile(w, s, BackupPolicyStatus::default(), members.clone(), ask, &sink)
        .await
        .unwrap();
    run(w, s, out.status, members).await.unwrap()
}

#[tokio::test]
async fn a_pbs_policy_manages_its_jobs_reports_verification_and_costs_constant_calls() {
    let w = world().await;
    w.sim.add_guest(vm(100, "web01"));
    w.sim.add_guest(vm(101, "db01"));
    w.pbs
        .add_job("verify", "v-nightly", json!({"store": "store1", "schedule": "03:00"}));
    let s = spec(PBS);
    let members = || vec![member("web01", 100), member("db01", 101)];
    let out = back_up_now(&w, &s, members(), "first").await;
    // PVE prunes nothing (the PBS prune job does), and each member's backup is a PBS snapshot.
    let job = w
        .sim
        .backup_jobs()
        .into_iter()
        .find(|j| j["id"] == json!("hlo-0b5e4a1c1111"))
        .unwrap();
    assert_eq!(job["prune-backups"], json!({"keep-all": "1"}));
    assert_eq!(w.pbs.snapshots("store1").len(), 2);
    let prune = &w.pbs.jobs("prune")["hlo-0b5e4a1c1111"];
    assert_eq!((prune["keep-daily"].clone(), prune["schedule"].clone()), (json!(7), json!("daily")));
    assert_eq!(w.pbs.jobs("verify")["hlo-0b5e4a1c1111"]["outdated-after"], json!(30));
    assert_eq!(w.pbs.gc_schedule("store1").as_deref(), Some("sun 04:00"));
    assert!(w.pbs.jobs("verify").contains_key("v-nightly"), "a job someone else made stays");
    let kinds: Vec<&str> = out.status.pbs_jobs.iter().map(|j| j.kind.as_str()).collect();
    assert_eq!(kinds, ["prune", "verify", "garbage-collection"]);
    assert_eq!(out.status.fresh.as_deref(), Some("2/2"));
    assert!(out.status.members.iter().all(|m| m.newest.as_ref().unwrap().verified.is_none()));

    // The verify job runs on the server; db01's chunks are bad.
    w.pbs.corrupt("store1", "101");
    run_pbs_job(&w, JobKind::Verify).await;
    let out = run(&w, &s, out.status, members()).await.unwrap();
    let verified: Vec<Option<String>> = out.status.members.iter().map(|m| m.newest.clone().unwrap().verified).collect();
    assert_eq!(verified, [Some("ok".into()), Some("failed".into())]);
    let (degraded, reason, msg) = condition(&out.status, "Degraded");
    assert_eq!((degraded.as_str(), reason.as_str()), ("True", "VerificationFailed"));
    assert!(msg.contains("db01: pbs1:backup/vm/101/"), "{msg}");
    let verify = out.status.pbs_jobs.iter().find(|j| j.kind == "verify").unwrap();
    assert!(
        verify.last_run_state.as_deref().unwrap().starts_with("verification failed"),
        "{verify:?}"
    );

    // Steady state: one PVE call and five PBS calls, however many members
    // (three job listings, datastore config, GC state); the datastore's
    // snapshots come from the listing shared per resync interval, which the
    // verify run above renewed.
    w.sim.reset_calls();
    let before = w.pbs.total_calls();
    run(&w, &s, out.status.clone(), members()).await.unwrap();
    assert_eq!(w.sim.calls(), [("GET /cluster/backup".to_string(), 1)].into());
    assert_eq!(w.pbs.total_calls() - before, 5, "{:?}", w.pbs.calls());
    // The next interval lists the snapshots once more: six.
    w.snapshots.forget("main/store1").await;
    let before = w.pbs.total_calls();
    run(&w, &s, out.status.clone(), members()).await.unwrap();
    assert_eq!(w.pbs.total_calls() - before, 6, "{:?}", w.pbs.calls());

    // Deleting the policy removes its jobs on both servers; snapshots and the GC schedule stay.
    let events = backup_policy::cleanup(apis(&w, &s), &id(), &s).await.unwrap();
    assert!(events.iter().filter(|e| e.reason == "PbsJobChanged").count() == 2, "{events:?}");
    assert!(!w.pbs.jobs("prune").contains_key("hlo-0b5e4a1c1111"));
    assert_eq!(w.pbs.jobs("verify").keys().collect::<Vec<_>>(), ["v-nightly"]);
    assert_eq!(w.pbs.snapshots("store1").len(), 2);
    assert_eq!(w.pbs.gc_schedule("store1").as_deref(), Some("sun 04:00"));
}

async fn run_pbs_job(w: &World, kind: JobKind) {
    use homelab_operator::providers::pbs::PbsApi;
    w.pbs_client.run_job(kind, "hlo-0b5e4a1c1111").await.unwrap();
    w.pbs.finish_tasks();
}

#[tokio::test]
async fn a_pbs_job_with_our_id_but_not_our_mark_stalls_the_policy() {
    let w = world().await;
    w.pbs.add_job(
        "prune",
        "hlo-0b5e4a1c1111",
        json!({"store": "store1", "schedule": "weekly", "keep-last": 1}),
    );
    let out = run(&w, &spec(PBS), BackupPolicyStatus::default(), vec![member("web01", 100)])
        .await
        .unwrap();
    let (stalled, reason, msg) = condition(&out.status, "Stalled");
    assert_eq!((stalled.as_str(), reason.as_str()), ("True", "Conflict"));
    assert!(msg.contains("PBS prune job 'hlo-0b5e4a1c1111'"), "{msg}");
    assert_eq!(w.pbs.jobs("prune")["hlo-0b5e4a1c1111"]["keep-last"], json!(1), "untouched");
}

const RESTORE: &str = "restoreTest: {schedule: '0 5 * * 0', scratchVmids: {first: 9900, last: 9909}, storage: local-lvm, node: pve2}\n";

#[tokio::test]
async fn a_restore_test_restores_the_newest_backup_runs_it_and_leaves_nothing_behind() {
    let w = world().await;
    w.sim.add_guest(vm(100, "web01"));
    w.sim.add_guest(vm(9900, "someone-elses"));
    let s = spec(&format!("{PBS}{RESTORE}"));
    let members = || vec![member("web01", 100)];
    let out = back_up_now(&w, &s, members(), "1").await;
    let sink = MemoryStatus::default();
    let ask = Ask {
        restore_test_now: Some("now"),
        ..Default::default()
    };
    let out = reconcile(&w, &s, out.status, members(), ask, &sink).await.unwrap();
    let t = out.status.last_restore_test.clone().unwrap();
    assert_eq!(
        (t.scratch_vmid, t.node.as_str(), t.guest.as_str()),
        (9901, "pve2", "web01"),
        "9900 is in use"
    );
    assert!(t.backup.starts_with("pbs1:backup/vm/100/"), "{}", t.backup);
    assert_eq!((t.phase.as_str(), t.result.as_deref()), ("Done", Some("OK")), "{t:?}");
    assert!(t.duration_seconds.is_some() && t.finished.is_some());
    assert!(w.sim.guest(9901).is_none(), "the scratch guest is destroyed");
    assert!(w.sim.guest(9900).is_some() && w.sim.guest(100).is_some());
    let calls = w.sim.calls();
    for c in [
        "POST /nodes/{node}/qemu",
        "POST /nodes/{node}/qemu/{vmid}/status/start",
        "DELETE /nodes/{node}/qemu/{vmid}",
    ] {
        assert_eq!(calls.get(c), Some(&1), "{c}: {calls:?}");
    }
    // It ran with its links down: the copy never answered on web01's address.
    let config_posts = calls.get("POST /nodes/{node}/qemu/{vmid}/config").copied().unwrap_or(0);
    assert_eq!(config_posts, 1, "{calls:?}");
    assert!(out.events.iter().any(|e| e.reason == "RestoreTestSucceeded"), "{:?}", out.events);
    assert_eq!(condition(&out.status, "Ready").0, "True");
    // The same annotation value does not run again.
    let again = reconcile(
        &w,
        &s,
        out.status,
        members(),
        Ask {
            restore_test_now: Some("now"),
            ..Default::default()
        },
        &sink,
    )
    .await
    .unwrap();
    assert_eq!(w.sim.calls().get("POST /nodes/{node}/qemu"), Some(&1));
    assert_eq!(again.status.last_restore_test.unwrap().request, "now");
}

#[tokio::test]
async fn a_restart_during_a_restore_test_resumes_and_cleans_up() {
    let w = world().await;
    w.sim.add_guest(vm(100, "web01"));
    let s = spec(RESTORE);
    let members = || vec![member("web01", 100)];
    let out = back_up_now(&w, &s, members(), "1").await;
    // Tasks hang now: the test stops mid-restore, as a killed operator would.
    w.sim.set_task_duration(std::time::Duration::from_secs(3600));
    let sink = MemoryStatus::default();
    let ask = || Ask {
        restore_test_now: Some("now"),
        ..Default::default()
    };
    let out = reconcile(&w, &s, out.status, members(), ask(), &sink).await.unwrap();
    assert_eq!(out.status.last_restore_test.as_ref().unwrap().phase, "Restoring");
    assert_eq!(out.requeue, homelab_operator::reconcile::POLL_TASK);
    // A new process starts from what was saved, the tasks finish.
    let saved = sink.0.lock().unwrap().clone();
    w.sim.set_task_duration(std::time::Duration::ZERO);
    w.sim.finish_tasks();
    let out = reconcile(&w, &s, saved, members(), ask(), &MemoryStatus::default()).await.unwrap();
    let t = out.status.last_restore_test.unwrap();
    assert_eq!((t.phase.as_str(), t.result.as_deref()), ("Done", Some("OK")), "{t:?}");
    assert_eq!(w.sim.calls().get("POST /nodes/{node}/qemu"), Some(&1), "not restored twice");
    assert!(w.sim.guest(t.scratch_vmid).is_none());
}

#[tokio::test]
async fn a_restore_that_fails_says_why_and_degrades_the_policy() {
    let w = world().await;
    w.sim.add_guest(vm(100, "web01"));
    // `local` holds ISOs and backups, not VM disks: PVE refuses the restore.
    let s = spec(&RESTORE.replace("storage: local-lvm", "storage: local"));
    let members = || vec![member("web01", 100)];
    let out = back_up_now(&w, &s, members(), "1").await;
    let ask = Ask {
        restore_test_now: Some("now"),
        ..Default::default()
    };
    let out = reconcile(&w, &s, out.status, members(), ask, &MemoryStatus::default())
        .await
        .unwrap();
    let t = out.status.last_restore_test.clone().unwrap();
    assert_eq!(t.phase, "Done");
    assert!(t.result.as_deref().unwrap().contains("does not support VM images"), "{t:?}");
    let (degraded, reason, msg) = condition(&out.status, "Degraded");
    assert_eq!((degraded.as_str(), reason.as_str()), ("True", "RestoreTestFailed"));
    assert!(msg.contains("web01"), "{msg}");
    assert!(w.sim.guests().iter().all(|g| g.vmid == 100), "no scratch guest left");
    assert!(out.events.iter().any(|e| e.warning && e.reason == "RestoreTestFailed"));
}

/// PBS's fixed roles (proxmox-backup `src/config/acl.rs`), the ones the README grants.
fn role_privileges(role: &str) -> &'static [&'static str] {
    match role {
        "DatastoreAdmin" => &[
            "Datastore.Audit",
            "Datastore.Modify",
            "Datastore.Read",
            "Datastore.Verify",
            "Datastore.Backup",
            "Datastore.Prune",
        ],
        "RemoteSyncOperator" => &["Remote.Audit", "Remote.Read"],
        other => panic!("README grants role {other} the test does not know"),
    }
}

#[tokio::test]
async fn the_readme_pbs_acls_grant_every_call_a_policy_makes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let granted: std::collections::BTreeSet<&str> = readme
        .lines()
        .filter(|l| l.starts_with("proxmox-backup-manager acl update ") && l.contains("'operator@pbs!homelab'"))
        .flat_map(|l| role_privileges(l.split_whitespace().nth(4).unwrap()).iter().copied())
        .collect();
    assert!(!granted.is_empty(), "README lacks the token's ACLs");
    let w = world().await;
    w.sim.add_guest(vm(100, "web01"));
    let s = spec(&format!(
        "{}{RESTORE}",
        PBS.replace(
            "garbageCollection",
            "sync: {remote: offsite, remoteStore: b2store, schedule: daily}, garbageCollection"
        )
    ));
    let out = back_up_now(&w, &s, vec![member("web01", 100)], "1").await;
    run_pbs_job(&w, JobKind::Verify).await;
    let mut changed = s.clone();
    changed.retention.as_mut().unwrap().keep_daily = Some(14);
    run(&w, &changed, out.status, vec![member("web01", 100)]).await.unwrap();
    backup_policy::cleanup(apis(&w, &s), &id(), &s).await.unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("tests/data/pbs-api-subset.json")).unwrap()).unwrap();
    let calls = w.pbs.calls();
    for wanted in [
        "POST /config/sync",
        "PUT /config/prune/{id}",
        "DELETE /config/verify/{id}",
        "PUT /config/datastore/{name}",
    ] {
        assert!(calls.contains_key(wanted), "{wanted} not exercised: {calls:?}");
    }
    let re = regex::Regex::new(r"(Datastore|Remote|Sys)\.[A-Za-z]+").unwrap();
    for call in calls.keys() {
        let (method, path) = call.split_once(' ').unwrap();
        let e = schema["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["method"] == method && e["path"] == path)
            .unwrap();
        let text = e["permissions"]
            .to_string()
            .replace("DATASTORE_AUDIT", "Datastore.Audit")
            .replace("DATASTORE_BACKUP", "Datastore.Backup");
        let named: Vec<&str> = re.find_iter(&text).map(|m| m.as_str()).collect();
        // Task status: a token may always read its own tasks.
        if named.is_empty() || path.starts_with("/nodes/") {
            continue;
        }
        assert!(
            named.iter().any(|p| granted.contains(p)),
            "{call} needs one of {named:?}; README grants {granted:?}"
        );
    }
}

#[tokio::test]
async fn a_scheduled_run_is_followed_through_the_task_lists_and_names_failing_members() {
    let w = world().await;
    w.sim.add_guest(vm(100, "web01"));
    w.sim.add_guest(vm(101, "db01"));
    let s = spec("");
    let members = || vec![member("web01", 100), member("db01", 101)];
    let out = run(&w, &s, BackupPolicyStatus::default(), members()).await.unwrap();
    w.sim.reset_calls();
    let steady = run(&w, &s, out.status.clone(), members()).await.unwrap();
    assert!(
        !w.sim.calls().contains_key("GET /nodes/{node}/tasks"),
        "nothing to follow before the time comes"
    );
    // The job's time comes: pvescheduler starts it; db01's backup fails.
    w.sim
        .fail_backups_of(101, Some("unable to freeze the guest filesystem - got timeout"));
    let due = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(5);
    let mut status = steady.status;
    status.next_run = Some(due.to_string());
    let job = status.job_id.clone().unwrap();
    assert_eq!(w.sim.run_backup_job(&job).unwrap().len(), 1, "both members are on pve1");
    let out = run(&w, &s, status, members()).await.unwrap();
    let r = out.status.last_scheduled_run.clone().unwrap();
    assert_eq!(r.request, format!("schedule {due}"));
    assert_eq!(r.result.as_deref(), Some("1 guests failed"), "{r:?}");
    assert_eq!(
        (r.failed[0].vmid, r.failed[0].error.as_str()),
        (101, "unable to freeze the guest filesystem - got timeout")
    );
    let (degraded, reason, msg) = condition(&out.status, "Degraded");
    assert_eq!((degraded.as_str(), reason.as_str()), ("True", "BackupFailed"));
    assert!(msg.contains("backup failed for db01 (VMID 101)"), "{msg}");
    assert!(
        out.events.iter().any(|e| e.warning && e.reason == "BackupFailed"),
        "{:?}",
        out.events
    );
    // Followed once: the next resync reads no task list.
    w.sim.reset_calls();
    let again = run(&w, &s, out.status, members()).await.unwrap();
    assert!(!w.sim.calls().contains_key("GET /nodes/{node}/tasks"));
    assert_eq!(again.status.last_scheduled_run, Some(r));
}

#[tokio::test]
async fn a_failing_member_is_notified_once_and_its_recovery_once() {
    let w = world().await;
    w.sim.add_guest(vm(100, "web01"));
    w.sim.add_guest(vm(101, "db01"));
    w.sim
        .fail_backups_of(101, Some("unable to freeze the guest filesystem - got timeout"));
    let s = spec("notify: [telegram, discord]\n");
    let members = || vec![member("web01", 100), member("db01", 101)];
    let sink = MemoryStatus::default();
    let ask = |v| Ask {
        backup_now: Some(v),
        ..Default::default()
    };
    let out = reconcile(&w, &s, BackupPolicyStatus::default(), members(), ask("1"), &sink)
        .await
        .unwrap();
    let out = reconcile(&w, &s, out.status, members(), ask("1"), &sink).await.unwrap();
    let got = w.chat.received();
    assert_eq!(
        got.iter().map(|r| r.service).collect::<Vec<_>>(),
        ["telegram", "discord"],
        "{got:?}"
    );
    assert!(
        got[0]
            .text
            .starts_with("[FAILURE] BackupPolicy homelab/nightly\nbackup failed for db01 (VMID 101)"),
        "{}",
        got[0].text
    );
    let n = out.status.notification.clone().unwrap();
    assert_eq!((n.event.as_str(), n.channels.len()), ("failure", 2));
    assert!(n.channels.iter().all(|c| c.outcome == "sent"), "{n:?}");
    // Resyncs, and a restarted operator reading the saved status, say nothing new.
    let again = run(&w, &s, out.status.clone(), members()).await.unwrap();
    let restarted = run(&w, &s, again.status, members()).await.unwrap();
    assert_eq!(w.chat.received().len(), 2);
    // Fixed and backed up again: one recovery message per channel.
    w.sim.fail_backups_of(101, None);
    let next = reconcile(&w, &s, restarted.status, members(), ask("2"), &sink).await.unwrap();
    let done = reconcile(&w, &s, next.status, members(), ask("2"), &sink).await.unwrap();
    assert_eq!(condition(&done.status, "Ready").0, "True", "{:?}", done.status.conditions);
    let got = w.chat.received();
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(
        got[2]
            .text
            .starts_with("[RECOVERED] BackupPolicy homelab/nightly\nbackups fresh again (2/2 members)"),
        "{}",
        got[2].text
    );
    assert_eq!(done.status.notification.unwrap().problem, None);
    // A channel the config does not have stalls the policy before it writes anything.
    let e = run(&w, &spec("notify: [pager]\n"), BackupPolicyStatus::default(), members())
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("channel \"pager\" is not in the config's notifications: section"),
        "{e}"
    );
}
