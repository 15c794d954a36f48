//! Proxmox Backup Server: the trait the BackupPolicy reconciler sees and its
//! HTTP implementation. Wire quirks live in `codec`.

pub mod client;
pub mod codec;

use std::{collections::BTreeMap, future::Future};

pub use client::PbsClient;
pub use codec::PbsUpid;
use serde::Deserialize;
use serde_json::Value;

/// Form parameters in the order they are sent.
pub type Params = Vec<(String, String)>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error status; `message` is the plain-text body PBS sends.
    #[error("{method} {path}: HTTP {status}: {message}")]
    Api {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{method} {path}: {message}")]
    Transport {
        method: &'static str,
        path: String,
        message: String,
    },
    #[error("{method} {path}: timed out")]
    Timeout { method: &'static str, path: String },
    #[error("{method} {path}: decoding the answer at {at}: {message}")]
    Decode {
        method: &'static str,
        path: String,
        at: String,
        message: String,
    },
    #[error("credentials: {0}")]
    Credentials(String),
}

impl Error {
    /// PBS answers most runtime failures with 400, so the status alone says
    /// little: a 400 is a refusal unless its text names a passing condition.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Timeout { .. } => true,
            Error::Api { status, message, .. } => {
                *status >= 500 || (*status == 400 && (message.contains("already running") || message.contains("locked")))
            }
            Error::Decode { .. } | Error::Credentials(_) => false,
        }
    }

    pub fn is_permission(&self) -> bool {
        matches!(self, Error::Api { status: 401 | 403, .. } | Error::Credentials(_))
    }

    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Api { status: 404, .. } => true,
            Error::Api { status: 400, message, .. } => message.contains("does not exist") || message.contains("not found"),
            _ => false,
        }
    }
}

/// The three job kinds under `/config/{kind}` and `/admin/{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobKind {
    Prune,
    Verify,
    Sync,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [JobKind::Prune, JobKind::Verify, JobKind::Sync];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Prune => "prune",
            JobKind::Verify => "verify",
            JobKind::Sync => "sync",
        }
    }
}

/// A job as `/admin/{kind}` lists it: its config fields plus run state.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Job {
    pub id: String,
    #[serde(flatten)]
    pub fields: BTreeMap<String, Value>,
}

impl Job {
    /// A config field as the form value that would set it.
    pub fn param(&self, key: &str) -> Option<String> {
        self.fields.get(key).and_then(codec::field_as_param)
    }
    pub fn comment(&self) -> Option<&str> {
        self.fields.get("comment").and_then(Value::as_str)
    }
    pub fn store(&self) -> Option<&str> {
        self.fields.get("store").and_then(Value::as_str)
    }
    pub fn next_run(&self) -> Option<i64> {
        self.fields.get("next-run").and_then(Value::as_i64)
    }
    pub fn last_run_state(&self) -> Option<&str> {
        self.fields.get("last-run-state").and_then(Value::as_str)
    }
    pub fn last_run_endtime(&self) -> Option<i64> {
        self.fields.get("last-run-endtime").and_then(Value::as_i64)
    }
}

/// One backup snapshot (`/admin/datastore/{store}/snapshots`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Snapshot {
    pub backup_type: String,
    pub backup_id: String,
    pub backup_time: i64,
    #[serde(default)]
    pub size: Option<u64>,
    /// The schema says strings; the server sends `{filename, crypt-mode, size}`.
    #[serde(default)]
    pub files: Vec<SnapshotFile>,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub verification: Option<Verification>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotFile {
    pub filename: String,
    #[serde(default)]
    pub crypt_mode: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Verification {
    /// `ok` or `failed`.
    pub state: String,
    #[serde(default)]
    pub upid: Option<String>,
}

/// `GET /config/datastore/{name}`, the part a policy touches, and the digest to write it back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatastoreConfig {
    pub gc_schedule: Option<String>,
    pub digest: Option<String>,
}

/// `GET /admin/datastore/{store}/gc`: the last garbage collection.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GcStatus {
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub last_run_state: Option<String>,
    #[serde(default)]
    pub last_run_endtime: Option<i64>,
    #[serde(default)]
    pub next_run: Option<i64>,
    #[serde(default)]
    pub removed_bytes: Option<u64>,
    #[serde(default)]
    pub pending_bytes: Option<u64>,
}

/// `GET /nodes/localhost/tasks/{upid}/status`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct TaskStatus {
    pub status: String,
    #[serde(default)]
    pub exitstatus: Option<String>,
}

impl TaskStatus {
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// The Proxmox Backup Server operations a BackupPolicy uses.
pub trait PbsApi: Send + Sync {
    /// Every snapshot of a datastore: one call serves all members.
    fn snapshots(&self, store: &str) -> impl Future<Output = Result<Vec<Snapshot>, Error>> + Send;
    /// Jobs of a kind with their run state (`GET /admin/{kind}`; sync jobs of both directions).
    fn jobs(&self, kind: JobKind) -> impl Future<Output = Result<Vec<Job>, Error>> + Send;
    fn create_job(&self, kind: JobKind, params: Params) -> impl Future<Output = Result<(), Error>> + Send;
    fn update_job(&self, kind: JobKind, id: &str, params: Params) -> impl Future<Output = Result<(), Error>> + Send;
    fn delete_job(&self, kind: JobKind, id: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Start a job now (`POST /admin/{kind}/{id}/run`).
    fn run_job(&self, kind: JobKind, id: &str) -> impl Future<Output = Result<PbsUpid, Error>> + Send;
    fn datastore_config(&self, store: &str) -> impl Future<Output = Result<DatastoreConfig, Error>> + Send;
    /// Set the datastore's GC schedule, guarded by the digest read before.
    fn set_gc_schedule(&self, store: &str, schedule: &str, digest: Option<&str>) -> impl Future<Output = Result<(), Error>> + Send;
    fn gc_status(&self, store: &str) -> impl Future<Output = Result<GcStatus, Error>> + Send;
    fn task_status(&self, upid: &PbsUpid) -> impl Future<Output = Result<TaskStatus, Error>> + Send;
}
