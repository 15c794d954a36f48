//! The PBS provider's types and codec decode every example body of the PBS
//! contract (copied under tests/data/fixtures/pbs), the schema-vs-reality ones included.

use std::path::Path;

use homelab_operator::providers::pbs::{
    GcStatus, Job, Snapshot, TaskStatus,
    codec::{PbsUpid, error_message, exit_ok},
};

fn dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures/pbs")
}

fn fixture(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join(name)).unwrap()).unwrap()
}

#[test]
fn snapshots_decode_with_file_objects_and_json_booleans() {
    let list: Vec<Snapshot> = serde_json::from_value(fixture("snapshots.json")["data"].clone()).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].files[1].filename, "drive-scsi0.img.fidx");
    assert_eq!(list[0].verification.as_ref().unwrap().state, "ok");
    assert!(!list[0].protected && list[1].protected);
    let upid = PbsUpid::parse(list[0].verification.as_ref().unwrap().upid.as_deref().unwrap()).unwrap();
    assert_eq!(upid.worker_id, "store1:v-nightly");
}

#[test]
fn jobs_keep_their_fields_and_run_state() {
    let jobs: Vec<Job> = serde_json::from_value(fixture("prune-jobs.json")["data"].clone()).unwrap();
    assert_eq!(jobs[0].id, "homelab-daily");
    assert_eq!(jobs[0].param("keep-daily").as_deref(), Some("7"));
    assert_eq!((jobs[0].last_run_state(), jobs[0].next_run()), (Some("ok"), Some(1746158400)));
    let verify = fixture("verify-jobs-config.json");
    let v: Vec<Job> = serde_json::from_value(verify["data"].clone()).unwrap();
    assert_eq!(v[0].param("ignore-verified").as_deref(), Some("true"));
    assert_eq!(verify["digest"].as_str().unwrap().len(), 64, "config reads carry a digest");
}

#[test]
fn gc_and_task_states_decode() {
    let gc: GcStatus = serde_json::from_value(fixture("gc-status.json")["data"].clone()).unwrap();
    assert_eq!((gc.schedule.as_deref(), gc.last_run_state.as_deref()), (Some("daily"), Some("ok")));
    let ok: TaskStatus = serde_json::from_value(fixture("task-status-ok.json")["data"].clone()).unwrap();
    assert!(!ok.is_running() && exit_ok(ok.exitstatus.as_deref().unwrap()));
    let err: TaskStatus = serde_json::from_value(fixture("task-status-error.json")["data"].clone()).unwrap();
    assert!(
        !exit_ok(err.exitstatus.as_deref().unwrap()),
        "the bare error text is the exit status"
    );
    let running: TaskStatus = serde_json::from_value(fixture("task-status-running.json")["data"].clone()).unwrap();
    assert!(running.is_running());
    for f in ["gc-started.json", "prune-datastore-started.json"] {
        assert!(PbsUpid::parse(fixture(f)["data"].as_str().unwrap()).is_some(), "{f}");
    }
}

#[test]
fn error_bodies_in_the_index_are_plain_text() {
    let index = fixture("INDEX.json");
    let raw: Vec<&serde_json::Value> = index["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f.get("raw_body").is_some())
        .collect();
    assert_eq!(raw.len(), 5);
    for f in raw {
        let body = f["raw_body"].as_str().unwrap();
        assert_eq!(error_message(body.as_bytes(), "reason"), body, "{}", f["path"]);
    }
}
