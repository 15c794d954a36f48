//! BackupPolicy through its reconciler, over HTTPS to the PVE simulator: the
//! vzdump job, freshness per member, foreign jobs, deletion, call counts.

use homelab_operator::{
    api::{BackupPolicySpec, BackupPolicyStatus},
    cli::oneshot::MemoryStatus,
    providers::pve::PveApi,
    reconcile::backup_policy::{self, PolicyOutcome, freshness::Member, job::JobPlan},
    sim::pve::config_section,
};
use serde_json::json;
use support::backup_world::*;

#[tokio::test]
async fn a_policy_keeps_one_job_and_reports_each_members_freshness() {
    let w = world().await;
    w.sim.add_backup_job(
        "backup-1d0e9c44-a1b0",
        json!({"schedule": "sat 03:00", "storage": "pbs1", "pool": "homelab"}),
    );
    let s = spec("");
    let members = || vec![member("web01", 100), member("jellyfin", 101)];

    // First reconcile: our job is created; no backups yet, and no run has
    // been due: waiting for the first one (Progressing), not Degraded.
    let out = run(&w, &s, BackupPolicyStatus::default(), members()).await.unwrap();
    assert!(matches!(out.plan.job, JobPlan::Create { .. }), "{:?}", out.plan.job);
    let jobs = w.sim.backup_jobs();
    let ours = jobs.iter().find(|j| j["id"] == json!("hlo-0b5e4a1c1111")).expect("our job");
    assert_eq!((ours["schedule"].clone(), ours["vmid"].clone()), (json!("02:30"), json!("100,101")));
    assert_eq!(ours["prune-backups"], json!({"keep-daily": "7"}));
    assert!(
        ours["comment"]
            .as_str()
            .unwrap()
            .contains("uid=0b5e4a1c-1111-4222-8333-444455556666")
    );
    let (ready, reason, msg) = condition(&out.status, "Ready");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "AwaitingFirstBackup"));
    assert!(
        msg.contains("2 of 2 members wait for their first backup") && msg.contains("web01; jellyfin"),
        "{msg}"
    );
    assert_eq!(condition(&out.status, "Degraded").0, "False");
    assert_eq!(out.status.fresh.as_deref(), Some("0/2"));
    assert_eq!(out.status.job_id.as_deref(), Some("hlo-0b5e4a1c1111"));

    // Backups appear: web01 fresh and verified, jellyfin's only one is stale.
    w.sim.add_backup(backup(100, HOUR, Some("ok")));
    w.sim.add_backup(backup(101, 30 * HOUR, None));
    let out = run(&w, &s, out.status, members()).await.unwrap();
    assert!(matches!(out.plan.job, JobPlan::NoChange { .. }), "{:?}", out.plan.job);
    assert!(out.status.next_run.is_some());
    let web = &out.status.members[0];
    assert!(web.fresh && web.newest.as_ref().unwrap().verified.as_deref() == Some("ok"));
    assert!(web.newest.as_ref().unwrap().volid.starts_with("pbs1:backup/vm/100/"));
    let (_, _, msg) = condition(&out.status, "Degraded");
    assert!(msg.contains("jellyfin: newest backup") && !msg.contains("web01"), "{msg}");

    w.sim.add_backup(backup(101, HOUR, Some("ok")));
    let out = run(&w, &s, out.status, members()).await.unwrap();
    assert_eq!(condition(&out.status, "Ready").0, "True");
    assert_eq!(out.status.fresh.as_deref(), Some("2/2"));

    // A guest joins: only the VMID list changes; the foreign job is untouched.
    let foreign_before = w.sim.backup_jobs().into_iter().find(|j| j["id"] == json!("backup-1d0e9c44-a1b0"));
    let mut more = members();
    more.push(member("dns01", 102));
    let out = run(&w, &s, out.status, more).await.unwrap();
    assert_eq!(
        out.plan.job,
        JobPlan::Update {
            id: "hlo-0b5e4a1c1111".into(),
            params: vec![("vmid".into(), "100,101,102".into())]
        }
    );
    // The newcomer waits for the next run; the others stay fresh.
    let (_, reason, msg) = condition(&out.status, "Reconciling");
    assert!(
        reason == "AwaitingFirstBackup" && msg.contains("1 of 3") && msg.contains("dns01"),
        "{msg}"
    );
    let foreign_after = w.sim.backup_jobs().into_iter().find(|j| j["id"] == json!("backup-1d0e9c44-a1b0"));
    assert_eq!(foreign_before, foreign_after);

    // Deleting the policy removes its job only; every backup stays.
    let events = backup_policy::cleanup(apis(&w, &s), &id(), &s).await.unwrap();
    assert_eq!(events[0].reason, "JobDeleted");
    let ids: Vec<_> = w.sim.backup_jobs().into_iter().map(|j| j["id"].clone()).collect();
    assert_eq!(ids, [json!("backup-1d0e9c44-a1b0")]);
    let left = w.client.storage_content("pve1", "pbs1", Some("backup")).await.unwrap();
    assert_eq!(left.len(), 3);
}

#[tokio::test]
async fn steady_state_costs_two_calls_whatever_the_number_of_members() {
    let w = world().await;
    let s = spec("");
    let members: Vec<Member> = (0..100).map(|i| member(&format!("ct{i:03}"), 200 + i)).collect();
    for m in &members {
        w.sim.add_backup(backup(m.vmid, HOUR, Some("ok")));
    }
    let out = run(&w, &s, BackupPolicyStatus::default(), members.clone()).await.unwrap();
    assert_eq!(out.status.fresh.as_deref(), Some("100/100"));
    w.sim.reset_calls();
    let out = run(&w, &s, out.status, members).await.unwrap();
    assert_eq!(condition(&out.status, "Ready").0, "True");
    assert_eq!(
        w.sim.calls(),
        [
            ("GET /cluster/backup".to_string(), 1),
            ("GET /nodes/{node}/storage/{storage}/content".to_string(), 1)
        ]
        .into()
    );
}

#[tokio::test]
async fn what_pve_refuses_is_permanent_and_foreign_jobs_are_never_taken() {
    let w = world().await;
    // A storage without backup content: said before PVE is asked (it would refuse), not retried.
    let e = run(
        &w,
        &spec("").with_storage("local-lvm"),
        BackupPolicyStatus::default(),
        vec![member("web01", 100)],
    )
    .await
    .expect_err("refused");
    assert!(
        e.to_string().contains("spec.storage: storage \"local-lvm\" does not hold backups"),
        "{e}"
    );
    assert!(!e.is_transient());
    assert!(!w.sim.calls().contains_key("POST /cluster/backup"), "no job sent for PVE to refuse");
    // A job with our id that someone else made (no mark): Stalled, untouched.
    w.sim.add_backup_job(
        "hlo-0b5e4a1c1111",
        json!({"schedule": "sun 01:00", "storage": "pbs1", "vmid": "300"}),
    );
    let out = run(&w, &spec(""), BackupPolicyStatus::default(), vec![member("web01", 100)])
        .await
        .unwrap();
    let (stalled, reason, msg) = condition(&out.status, "Stalled");
    assert_eq!((stalled.as_str(), reason.as_str()), ("True", "Conflict"));
    assert!(msg.contains("adoptJobId"), "{msg}");
    assert_eq!(w.sim.backup_jobs()[0]["vmid"], json!("300"));
    // Adopting it by opt-in: it becomes the policy's job.
    let adopt = spec("adoptJobId: hlo-0b5e4a1c1111\n");
    let out = run(&w, &adopt, BackupPolicyStatus::default(), vec![member("web01", 100)])
        .await
        .unwrap();
    assert!(matches!(out.plan.job, JobPlan::Update { .. }));
    let j = &w.sim.backup_jobs()[0];
    assert_eq!((j["vmid"].clone(), j["schedule"].clone()), (json!("100"), json!("02:30")));
    // ObserveOnly writes nothing.
    let watch = spec("managementMode: ObserveOnly\nadoptJobId: hlo-0b5e4a1c1111\n").with_schedule("03:00");
    let out = run(&w, &watch, BackupPolicyStatus::default(), vec![member("web01", 100)])
        .await
        .unwrap();
    assert_eq!(w.sim.backup_jobs()[0]["schedule"], json!("02:30"));
    let (ready, reason, msg) = condition(&out.status, "Ready");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "DriftDetected"));
    assert!(msg.contains("schedule"), "{msg}");
}

trait With {
    fn with_storage(self, s: &str) -> Self;
    fn with_schedule(self, s: &str) -> Self;
}

impl With for BackupPolicySpec {
    fn with_storage(mut self, s: &str) -> Self {
        self.storage = s.into();
        self
    }
    fn with_schedule(mut self, s: &str) -> Self {
        self.schedule = s.into();
        self
    }
}

mod support {
    pub mod backup_world;
    pub mod pve_permissions;
}

#[tokio::test]
async fn the_readme_roles_grant_every_call_a_policy_makes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let privs: std::collections::BTreeSet<String> = ["pveum role add HomelabOperator -privs ", "pveum role add HomelabBackup -privs "]
        .iter()
        .flat_map(|prefix| {
            let line = readme
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("README lacks {prefix:?}"));
            line.split('"')
                .nth(1)
                .unwrap()
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let w = world().await;
    let s = spec("");
    let out = run(&w, &s, BackupPolicyStatus::default(), vec![member("web01", 100)])
        .await
        .unwrap();
    let more = vec![member("web01", 100), member("db01", 101)];
    run(&w, &s, out.status, more).await.unwrap();
    run(&w, &s, BackupPolicyStatus::default(), vec![]).await.unwrap();
    let calls: Vec<String> = w.sim.calls().into_keys().collect();
    for wanted in ["POST /cluster/backup", "PUT /cluster/backup/{id}", "DELETE /cluster/backup/{id}"] {
        assert!(calls.contains(&wanted.to_string()), "{wanted} not exercised: {calls:?}");
    }
    let subset: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("tests/data/pve-api-subset.json")).unwrap()).unwrap();
    let unmet = support::pve_permissions::unmet(&subset, &calls, &privs);
    assert!(unmet.is_empty(), "the README's roles lack:\n{}", unmet.join("\n"));
}

/// `plan` then `apply` of the examples as a person runs them: the policy's job
/// is planned, then created for the example guests it selects or that name it.
#[tokio::test]
async fn plan_and_apply_handle_the_example_policy() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    let pbs = homelab_operator::sim::pbs::config_section("main", &w.pbs, &w._servers.1, dir.path()).unwrap();
    std::fs::write(&config, config_section(&w.sim, &w._servers.0, dir.path()).unwrap() + &pbs).unwrap();
    // The examples, but not the monitor: its check would leave loopback (web01's simulated
    // address); tests/monitor_scheduler.rs applies a monitor against a local service instead.
    let examples = dir.path().join("examples");
    std::fs::create_dir(&examples).unwrap();
    for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/examples")).unwrap() {
        let f = f.unwrap().path();
        if !f.file_name().unwrap().to_string_lossy().starts_with("monitor-") {
            std::fs::copy(&f, examples.join(f.file_name().unwrap())).unwrap();
        }
    }
    let run = |command: &'static str| {
        let config = config.clone();
        let examples = examples.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_homelab-operator"))
                .args([command, "--config"])
                .arg(&config)
                .arg("-f")
                .arg(&examples)
                .output()
                .unwrap()
        })
    };
    let plan = run("plan").await.unwrap();
    let out = String::from_utf8_lossy(&plan.stdout);
    assert!(out.contains("BackupPolicy homelab/nightly:"), "{out}");
    assert!(
        out.contains("+ PBS: create prune job hlo-") && out.contains("garbage-collection schedule to sun 06:00"),
        "{out}"
    );
    assert!(
        w.sim.backup_jobs().is_empty() && w.pbs.jobs("prune").is_empty(),
        "plan wrote nothing"
    );
    assert!(out.contains("cluster default: every guest is in a backup job"), "{out}");
    let applied = run("apply").await.unwrap();
    let out = String::from_utf8_lossy(&applied.stdout);
    // (The examples' DNS records and proxy hosts fail here: this config names no DNS server or proxy.)
    let jobs = w.sim.backup_jobs();
    assert_eq!(jobs.len(), 1, "{out}");
    assert_eq!((w.pbs.jobs("prune").len(), w.pbs.jobs("verify").len()), (1, 1), "{out}");
    let web01 = w
        .sim
        .guests()
        .into_iter()
        .find(|g| g.get("name").as_deref() == Some("web01"))
        .unwrap()
        .vmid;
    let jellyfin = w
        .sim
        .guests()
        .into_iter()
        .find(|g| g.get("hostname").as_deref() == Some("jellyfin"))
        .unwrap()
        .vmid;
    let replan = run("plan").await.unwrap();
    let out_plan = String::from_utf8_lossy(&replan.stdout);
    let installer = w
        .sim
        .guests()
        .into_iter()
        .find(|g| g.get("name").as_deref() == Some("lab-installer"))
        .unwrap()
        .vmid;
    let app01 = w
        .sim
        .guests()
        .into_iter()
        .find(|g| g.get("name").as_deref() == Some("app01"))
        .unwrap()
        .vmid;
    let line = out_plan
        .lines()
        .find(|l| l.starts_with("cluster default: 2 guests in no backup job: "))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("{app01} app01")) && line.contains(&format!("{installer} lab-installer")),
        "the guests no policy selects are named: {out_plan}"
    );
    let mut both = [web01, jellyfin];
    both.sort();
    assert_eq!(
        jobs[0]["vmid"],
        json!(format!("{},{}", both[0], both[1])),
        "selected by label and by name"
    );
    assert!(
        out.contains("homelab/nightly") && out.contains("0/2"),
        "the table reports freshness: {out}"
    );
}

async fn run_now(
    w: &World,
    s: &BackupPolicySpec,
    status: BackupPolicyStatus,
    members: Vec<Member>,
    request: &str,
    sink: &MemoryStatus<BackupPolicyStatus>,
) -> PolicyOutcome {
    let ask = Ask {
        backup_now: Some(request),
        ..Default::default()
    };
    reconcile(w, s, status, members, ask, sink).await.unwrap()
}

#[tokio::test]
async fn back_up_now_runs_once_per_value_names_failing_guests_and_survives_a_restart() {
    let w = world().await;
    w.sim.add_guest(sim_guest(100, "qemu", "pve1", "web01"));
    w.sim.add_guest(sim_guest(101, "lxc", "pve2", "jellyfin"));
    w.sim.fail_backups_of(
        101,
        Some("unable to create temporary directory '/var/tmp/vzdumptmp' - No space left on device"),
    );
    let s = spec("");
    let members = || {
        vec![
            member("web01", 100),
            Member {
                node: Some("pve2".into()),
                ..member("jellyfin", 101)
            },
        ]
    };
    let sink = MemoryStatus::<BackupPolicyStatus>::default();
    let out = run_now(&w, &s, BackupPolicyStatus::default(), members(), "2026-12-02", &sink).await;
    assert!(out.events.iter().any(|e| e.reason == "BackupStarted"), "{:?}", out.events);
    // Saved as soon as each task started: a restart finds them instead of starting them again.
    let saved = sink.0.lock().unwrap().clone();
    assert_eq!(saved.last_run.as_ref().unwrap().tasks.len(), 2, "one vzdump per node");
    let again = run_now(&w, &s, saved, members(), "2026-12-02", &sink).await;
    assert_eq!(w.sim.calls().get("POST /nodes/{node}/vzdump"), Some(&2), "not started twice");
    let run = again.status.last_run.clone().unwrap();
    assert_eq!(run.result.as_deref(), Some("1 guests failed"));
    assert_eq!(run.failed[0].vmid, 101);
    assert!(run.failed[0].error.contains("No space left on device"));
    assert!(
        again
            .events
            .iter()
            .any(|e| e.reason == "BackupFailed" && e.note.contains("backup failed for jellyfin (VMID 101)"))
    );
    let (ready, reason, msg) = condition(&again.status, "Degraded");
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "BackupFailed"));
    assert!(msg.contains("jellyfin") && msg.contains("No space left"), "{msg}");
    assert!(again.status.members[0].fresh, "web01 got its backup");

    // The same value again runs nothing; a new one, with the disk freed, makes it Ready.
    let same = run_now(&w, &s, again.status, members(), "2026-12-02", &sink).await;
    assert_eq!(w.sim.calls().get("POST /nodes/{node}/vzdump"), Some(&2));
    w.sim.fail_backups_of(101, None);
    let next = run_now(&w, &s, same.status, members(), "2026-12-03", &sink).await;
    let done = run_now(&w, &s, next.status, members(), "2026-12-03", &sink).await;
    assert_eq!(done.status.last_run.as_ref().unwrap().result.as_deref(), Some("OK"));
    assert_eq!(condition(&done.status, "Ready").0, "True", "{:?}", done.status.conditions);
    assert_eq!(done.status.fresh.as_deref(), Some("2/2"));
    let notes: Vec<_> = w.client.storage_content("pve2", "pbs1", Some("backup")).await.unwrap();
    assert!(
        notes.iter().any(|b| b.notes.as_deref() == Some("jellyfin")),
        "notesTemplate expanded"
    );

    // A member no node has: failed at once, nothing sent for it (never `POST /nodes//vzdump`).
    let ghost = Member {
        node: None,
        ..member("ghost", 4242)
    };
    let with_ghost = || [members(), vec![ghost.clone()]].concat();
    let started = run_now(&w, &s, done.status, with_ghost(), "2026-12-04", &sink).await;
    let ended = run_now(&w, &s, started.status, with_ghost(), "2026-12-04", &sink).await;
    let run = ended.status.last_run.unwrap();
    assert_eq!(run.failed.iter().map(|f| f.vmid).collect::<Vec<_>>(), [4242]);
    assert!(run.failed[0].error.contains("no guest with VMID 4242"), "{:?}", run.failed);
    assert_eq!(
        w.sim.calls().get("POST /nodes/{node}/vzdump"),
        Some(&6),
        "one per node, none for the ghost"
    );
}
