//! The PBS client against the PBS simulator over real HTTPS on loopback:
//! job CRUD with digests, snapshot listing, GC, tasks, error texts, faults.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use homelab_operator::{
    config::TlsTrust,
    providers::pbs::{Error, JobKind, PbsApi, PbsClient},
    sim::{
        FaultKind, ScriptedFault,
        pbs::{PbsSim, PbsSimConfig, SimSnapshot, endpoint_for},
    },
};

struct Fixture {
    sim: Arc<PbsSim>,
    client: PbsClient,
    _server: homelab_operator::sim::SimServer,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let sim = PbsSim::new(PbsSimConfig {
        // Tasks run until a test finishes them.
        task_duration: Duration::from_secs(3600),
        ..Default::default()
    })
    .unwrap();
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ep = endpoint_for("main", &sim, &server, dir.path()).unwrap();
    let client = PbsClient::new(&ep, None).unwrap();
    Fixture {
        sim,
        client,
        _server: server,
        _dir: dir,
    }
}

fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn snapshot(id: &str, time: i64, comment: &str) -> SimSnapshot {
    SimSnapshot {
        backup_type: "vm".into(),
        backup_id: id.into(),
        backup_time: time,
        size: 1 << 30,
        protected: false,
        comment: comment.into(),
        verified: None,
        guest_config: BTreeMap::new(),
        corrupt: false,
    }
}

#[tokio::test]
async fn prune_jobs_are_created_updated_and_deleted() {
    let f = fixture().await;
    let create = p(&[
        ("id", "hlo-abc"),
        ("store", "store1"),
        ("schedule", "daily"),
        ("keep-daily", "7"),
        ("comment", "mark"),
    ]);
    f.client.create_job(JobKind::Prune, create.clone()).await.unwrap();
    let jobs = f.client.jobs(JobKind::Prune).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].param("keep-daily").as_deref(), jobs[0].comment()),
        (Some("7"), Some("mark"))
    );
    assert!(jobs[0].next_run().is_some());
    let e = f.client.create_job(JobKind::Prune, create).await.unwrap_err();
    assert!(e.to_string().contains("job 'hlo-abc' already exists."), "{e}");
    f.client
        .update_job(JobKind::Prune, "hlo-abc", p(&[("keep-daily", "14"), ("delete", "comment")]))
        .await
        .unwrap();
    let job = &f.sim.jobs("prune")["hlo-abc"];
    assert_eq!((job["keep-daily"].as_i64(), job.get("comment")), (Some(14), None));
    f.client.delete_job(JobKind::Prune, "hlo-abc").await.unwrap();
    let e = f.client.delete_job(JobKind::Prune, "hlo-abc").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn the_server_refuses_what_pbs_refuses() {
    let f = fixture().await;
    let e = f
        .client
        .create_job(
            JobKind::Prune,
            p(&[("id", "x1x"), ("store", "store1"), ("schedule", "daily"), ("keep-last", "0")]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Api { status: 400, message, .. } if message.contains("'keep-last'")),
        "{e}"
    );
    assert!(!e.is_transient());
    let e = f.client.snapshots("nosuch").await.unwrap_err();
    assert!(
        matches!(&e, Error::Api { status: 400, message, .. } if message == "no such datastore 'nosuch'"),
        "{e}"
    );
    let e = f
        .client
        .create_job(
            JobKind::Sync,
            p(&[
                ("id", "s-1"),
                ("store", "store1"),
                ("remote", "nowhere"),
                ("remote-store", "x1x"),
                ("schedule", "daily"),
            ]),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("remote 'nowhere' does not exist."), "{e}");
    let e = f
        .client
        .create_job(
            JobKind::Verify,
            p(&[("id", "v-1"), ("store", "store1"), ("schedule", "every tuesday")]),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unable to parse calendar event"), "{e}");
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_booleans_come_back_as_json() {
    let f = fixture().await;
    f.sim.add_snapshot("store1", snapshot("100", 1_746_064_800, "web01"));
    let snaps = f.client.snapshots("store1").await.unwrap();
    assert_eq!((snaps[0].backup_id.as_str(), snaps[0].protected), ("100", false));
    assert_eq!(snaps[0].comment.as_deref(), Some("web01"));
    let dir = tempfile::tempdir().unwrap();
    let ep = endpoint_for("main", &f.sim, &f._server, dir.path()).unwrap();
    std::fs::write(dir.path().join("pbs-token-main"), "wrong").unwrap();
    assert!(
        matches!(ep.tls, TlsTrust::Fingerprint(_)),
        "pinned, as a person configures a self-signed PBS"
    );
    let bad = PbsClient::new(&ep, None).unwrap();
    let e = bad.snapshots("store1").await.unwrap_err();
    assert!(
        e.is_permission() && e.to_string().contains("authentication failed - invalid token"),
        "{e}"
    );
}

#[tokio::test]
async fn verify_jobs_mark_snapshots_and_report_their_run() {
    let f = fixture().await;
    f.sim.add_snapshot("store1", snapshot("100", 1_746_064_800, ""));
    f.sim.add_snapshot("store1", snapshot("101", 1_746_064_800, ""));
    f.sim.corrupt("store1", "101");
    f.client
        .create_job(
            JobKind::Verify,
            p(&[
                ("id", "hlo-v"),
                ("store", "store1"),
                ("schedule", "daily"),
                ("ignore-verified", "true"),
            ]),
        )
        .await
        .unwrap();
    let upid = f.client.run_job(JobKind::Verify, "hlo-v").await.unwrap();
    assert_eq!(upid.worker_type, "verificationjob");
    assert_eq!(upid.worker_id, "store1:hlo-v");
    assert!(f.client.task_status(&upid).await.unwrap().is_running());
    f.sim.finish_tasks();
    let st = f.client.task_status(&upid).await.unwrap();
    assert!(st.exitstatus.unwrap().starts_with("verification failed"));
    let snaps = f.client.snapshots("store1").await.unwrap();
    let state = |id: &str| {
        snaps
            .iter()
            .find(|s| s.backup_id == id)
            .unwrap()
            .verification
            .clone()
            .unwrap()
            .state
    };
    assert_eq!((state("100"), state("101")), ("ok".to_string(), "failed".to_string()));
    let jobs = f.client.jobs(JobKind::Verify).await.unwrap();
    assert!(jobs[0].last_run_state().unwrap().starts_with("verification failed"));
}

#[tokio::test]
async fn prune_keeps_what_the_rules_say_and_protected_snapshots() {
    let f = fixture().await;
    let day = 86_400;
    for i in 0..5 {
        f.sim.add_snapshot("store1", snapshot("100", 1_746_064_800 + i * day, ""));
    }
    let mut protected = snapshot("100", 1_746_064_800 - 30 * day, "");
    protected.protected = true;
    f.sim.add_snapshot("store1", protected);
    f.client
        .create_job(
            JobKind::Prune,
            p(&[("id", "hlo-p"), ("store", "store1"), ("schedule", "daily"), ("keep-last", "2")]),
        )
        .await
        .unwrap();
    f.client.run_job(JobKind::Prune, "hlo-p").await.unwrap();
    f.sim.finish_tasks();
    let times: Vec<i64> = f.sim.snapshots("store1").iter().map(|s| s.backup_time).collect();
    assert_eq!(
        times,
        vec![1_746_064_800 + 3 * day, 1_746_064_800 + 4 * day, 1_746_064_800 - 30 * day]
    );
}

#[tokio::test]
async fn gc_schedule_writes_are_guarded_by_the_digest() {
    let f = fixture().await;
    let cfg = f.client.datastore_config("store1").await.unwrap();
    assert_eq!(cfg.gc_schedule, None);
    f.client
        .set_gc_schedule("store1", "sun 04:00", cfg.digest.as_deref())
        .await
        .unwrap();
    assert_eq!(f.sim.gc_schedule("store1").as_deref(), Some("sun 04:00"));
    // The digest read before the first write is stale now.
    let e = f
        .client
        .set_gc_schedule("store1", "daily", cfg.digest.as_deref())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("detected modified configuration"), "{e}");
    let gc = f.client.gc_status("store1").await.unwrap();
    assert_eq!(gc.schedule.as_deref(), Some("sun 04:00"));
}

#[tokio::test]
async fn reads_are_retried_but_a_create_is_sent_once() {
    let f = fixture().await;
    f.sim
        .faults
        .lock()
        .unwrap()
        .scripted
        .push_back(ScriptedFault::new("GET", "/admin/prune", FaultKind::Status(503, "busy".into()), 1));
    assert!(f.client.jobs(JobKind::Prune).await.unwrap().is_empty());
    assert_eq!(
        f.sim.calls()["GET /admin/prune"],
        1,
        "the faulted call is not counted by the sim, the retry is"
    );
    f.sim
        .faults
        .lock()
        .unwrap()
        .scripted
        .push_back(ScriptedFault::new("POST", "/config/prune", FaultKind::Drop, 1));
    let e = f
        .client
        .create_job(
            JobKind::Prune,
            p(&[("id", "hlo-x"), ("store", "store1"), ("schedule", "daily"), ("keep-last", "1")]),
        )
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        f.sim.jobs("prune").is_empty(),
        "a dropped create is not retried behind the caller's back"
    );
}

#[tokio::test]
async fn groups_and_snapshot_deletion_answer_as_pbs_does() {
    let f = fixture().await;
    f.sim.add_snapshot("store1", snapshot("100", 1_746_064_800, "web01"));
    let mut protected = snapshot("100", 1_746_000_000, "web01");
    protected.protected = true;
    f.sim.add_snapshot("store1", protected);
    // The fixtures' shape: one group per guest, files of the newest snapshot as names.
    let url = format!("{}/api2/json/admin/datastore/store1/groups", f._server.url);
    let (id, secret) = f.sim.token();
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let auth = format!("PBSAPIToken={id}:{secret}");
    let v: serde_json::Value = http
        .get(&url)
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let g = &v["data"][0];
    assert_eq!(
        (g["backup-count"].as_u64(), g["last-backup"].as_i64(), g["comment"].as_str()),
        (Some(2), Some(1_746_064_800), Some("web01"))
    );
    assert!(g["files"].as_array().unwrap().iter().all(|f| f.is_string()));
    let del = format!(
        "{}/api2/json/admin/datastore/store1/snapshots?backup-type=vm&backup-id=100&backup-time=1746000000",
        f._server.url
    );
    let r = http.delete(&del).header("Authorization", &auth).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        r.text().await.unwrap(),
        "cannot remove protected snapshot",
        "plain text, as the contract's raw_body"
    );
}
