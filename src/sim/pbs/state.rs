//! The simulated backup server's state: datastores with snapshots, job
//! configs with digests, garbage collection and tasks.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::providers::pbs::codec::systemd_escape;

/// An error answer: PBS sends the bare text (most runtime errors are 400).
#[derive(Debug)]
pub struct SimError(pub u16, pub String);

pub(super) fn bad(msg: impl Into<String>) -> SimError {
    SimError(400, msg.into())
}

/// One backup snapshot in a datastore.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSnapshot {
    /// `vm`, `ct` or `host`.
    pub backup_type: String,
    pub backup_id: String,
    pub backup_time: i64,
    pub size: u64,
    pub protected: bool,
    pub comment: String,
    /// `ok` or `failed`; none until verified.
    pub verified: Option<String>,
    /// The guest config stored with it (`qemu-server.conf.blob` / `pct.conf.blob`).
    pub guest_config: BTreeMap<String, Value>,
    /// A corrupt chunk: verification of it fails.
    pub corrupt: bool,
}

impl SimSnapshot {
    fn answer(&self) -> Value {
        let conf = if self.backup_type == "ct" {
            "pct.conf.blob"
        } else {
            "qemu-server.conf.blob"
        };
        let disk = if self.backup_type == "ct" {
            "root.pxar.didx"
        } else {
            "drive-scsi0.img.fidx"
        };
        let mut v = json!({
            "backup-type": self.backup_type, "backup-id": self.backup_id, "backup-time": self.backup_time,
            "files": [
                {"filename": conf, "crypt-mode": "none", "size": 512},
                {"filename": disk, "crypt-mode": "none", "size": self.size},
                {"filename": "index.json.blob", "crypt-mode": "none", "size": 620},
            ],
            "size": self.size + 1132, "owner": "pve-sync@pbs!pve1", "protected": self.protected,
        });
        if !self.comment.is_empty() {
            v["comment"] = json!(self.comment);
        }
        if let Some(s) = &self.verified {
            v["verification"] = json!({"state": s, "upid": format!("UPID:pbs:00000A1B:0001C2D3:00000009:{:08X}:verificationjob:{}:root@pam:", self.backup_time, systemd_escape("store"))});
        }
        v
    }
}

#[derive(Clone, Debug)]
pub(super) struct Task {
    pub upid: String,
    pub worker_type: String,
    pub started: i64,
    pub done_at: Instant,
    pub exit: Option<String>,
    pub effect: Effect,
}

#[derive(Clone, Debug)]
pub(super) enum Effect {
    Gc { store: String },
    Job { kind: String, id: String },
}

pub(super) struct State {
    pub token_id: String,
    pub token_secret: String,
    pub task_duration: Duration,
    pub stores: BTreeMap<String, Vec<SimSnapshot>>,
    /// Datastore config fields (`gc-schedule`, …).
    pub store_config: BTreeMap<String, BTreeMap<String, Value>>,
    /// `/config/{kind}` sections, by kind then id.
    pub jobs: BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>>,
    /// Last run of each job (`last-run-state`, `last-run-upid`, `last-run-endtime`).
    pub job_runs: BTreeMap<(String, String), BTreeMap<String, Value>>,
    pub gc_last: BTreeMap<String, BTreeMap<String, Value>>,
    pub remotes: Vec<String>,
    pub tasks: Vec<Task>,
    next_task: u32,
}

pub(super) fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// sha256 over a config section, as PBS digests its config files.
pub(super) fn digest(v: &impl serde::Serialize) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(v).unwrap_or_default()))
}

impl State {
    pub fn new(token_id: String, token_secret: String, stores: &[&str], task_duration: Duration) -> Self {
        Self {
            token_id,
            token_secret,
            task_duration,
            stores: stores.iter().map(|s| (s.to_string(), vec![])).collect(),
            store_config: stores.iter().map(|s| (s.to_string(), BTreeMap::new())).collect(),
            jobs: ["prune", "verify", "sync"]
                .iter()
                .map(|k| (k.to_string(), BTreeMap::new()))
                .collect(),
            job_runs: BTreeMap::new(),
            gc_last: BTreeMap::new(),
            remotes: vec![],
            tasks: vec![],
            next_task: 0,
        }
    }

    pub fn store(&self, store: &str) -> Result<&Vec<SimSnapshot>, SimError> {
        self.stores.get(store).ok_or_else(|| bad(format!("no such datastore '{store}'")))
    }

    pub fn snapshots(&self, store: &str, p: &BTreeMap<String, String>) -> Result<Value, SimError> {
        let list = self
            .store(store)?
            .iter()
            .filter(|s| p.get("backup-type").is_none_or(|t| t == &s.backup_type))
            .filter(|s| p.get("backup-id").is_none_or(|i| i == &s.backup_id))
            .map(SimSnapshot::answer)
            .collect();
        Ok(Value::Array(list))
    }

    /// `GET /admin/datastore/{store}/groups`: one entry per guest, its newest snapshot's files.
    pub fn groups(&self, store: &str) -> Result<Value, SimError> {
        let mut groups: BTreeMap<(String, String), Vec<&SimSnapshot>> = BTreeMap::new();
        for s in self.store(store)? {
            groups.entry((s.backup_type.clone(), s.backup_id.clone())).or_default().push(s);
        }
        let list = groups
            .into_iter()
            .map(|((t, id), snaps)| {
                let newest = snaps.iter().max_by_key(|s| s.backup_time).expect("non-empty group");
                let mut files: Vec<String> = newest.answer()["files"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["filename"].as_str().map(str::to_string))
                    .collect();
                files.sort();
                let mut g = json!({"backup-type": t, "backup-id": id, "last-backup": newest.backup_time,
                    "backup-count": snaps.len(), "files": files, "owner": "pve-sync@pbs!pve1"});
                if !newest.comment.is_empty() {
                    g["comment"] = json!(newest.comment);
                }
                g
            })
            .collect();
        Ok(Value::Array(list))
    }

    pub fn delete_snapshot(&mut self, store: &str, p: &BTreeMap<String, String>) -> Result<Value, SimError> {
        let time: i64 = p.get("backup-time").and_then(|t| t.parse().ok()).unwrap_or(0);
        let snaps = self
            .stores
            .get_mut(store)
            .ok_or_else(|| bad(format!("no such datastore '{store}'")))?;
        let Some(pos) = snaps.iter().position(|s| {
            Some(&s.backup_type) == p.get("backup-type") && Some(&s.backup_id) == p.get("backup-id") && s.backup_time == time
        }) else {
            return Err(bad("backup dir does not exist"));
        };
        if snaps[pos].protected {
            return Err(bad("cannot remove protected snapshot"));
        }
        snaps.remove(pos);
        Ok(Value::Null)
    }

    /// A new task; its effect is applied when it ends.
    pub fn start_task(&mut self, worker_type: &str, worker_id: &str, effect: Effect) -> String {
        self.next_task += 1;
        let started = now();
        let upid = format!(
            "UPID:pbs:00000A1B:0001C2D3:{:08X}:{:08X}:{worker_type}:{}:{}:",
            self.next_task,
            started,
            systemd_escape(worker_id),
            self.token_id
        );
        self.tasks.push(Task {
            upid: upid.clone(),
            worker_type: worker_type.into(),
            started,
            done_at: Instant::now() + self.task_duration,
            exit: None,
            effect,
        });
        upid
    }

    /// End every task that is due.
    pub fn advance(&mut self, all: bool) {
        let now_i = Instant::now();
        for i in 0..self.tasks.len() {
            if self.tasks[i].exit.is_none() && (all || self.tasks[i].done_at <= now_i) {
                let effect = self.tasks[i].effect.clone();
                let exit = self.apply(&effect);
                let t = &mut self.tasks[i];
                t.exit = Some(exit.clone());
                let run = json!({"last-run-state": if exit == "OK" { "ok".to_string() } else { exit.clone() },
                    "last-run-upid": t.upid, "last-run-endtime": now()});
                let fields: BTreeMap<String, Value> = serde_json::from_value(run).unwrap_or_default();
                match &effect {
                    Effect::Gc { store } => {
                        self.gc_last.insert(store.clone(), fields);
                    }
                    Effect::Job { kind, id } => {
                        self.job_runs.insert((kind.clone(), id.clone()), fields);
                    }
                }
            }
        }
    }

    /// What a finished task did; its exit status.
    fn apply(&mut self, effect: &Effect) -> String {
        match effect {
            Effect::Gc { .. } => "OK".into(),
            Effect::Job { kind, id } => {
                let Some(job) = self.jobs.get(kind).and_then(|j| j.get(id)).cloned() else {
                    return format!("job '{id}' does not exist");
                };
                let store = job.get("store").and_then(Value::as_str).unwrap_or_default().to_string();
                match kind.as_str() {
                    "verify" => self.verify(&store, &job),
                    "prune" => self.prune(&store, &job),
                    _ => "OK".into(),
                }
            }
        }
    }

    fn verify(&mut self, store: &str, job: &BTreeMap<String, Value>) -> String {
        let ignore_verified = job.get("ignore-verified").is_none_or(|v| v == &json!(true));
        let mut failed = 0;
        for s in self.stores.get_mut(store).into_iter().flatten() {
            if ignore_verified && s.verified.as_deref() == Some("ok") {
                continue;
            }
            s.verified = Some(if s.corrupt { "failed" } else { "ok" }.into());
            failed += s.corrupt as u32;
        }
        match failed {
            0 => "OK".into(),
            n => format!("verification failed on these snapshots/groups: {n} snapshots"),
        }
    }

    /// Keep rules as proxmox-backup's prune: per group, newest first, each
    /// `keep-*` marks the newest snapshot of each of its last N periods.
    fn prune(&mut self, store: &str, job: &BTreeMap<String, Value>) -> String {
        let Some(snaps) = self.stores.get_mut(store) else {
            return format!("no such datastore '{store}'");
        };
        let keep = |k: &str| job.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
        let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
        for (i, s) in snaps.iter().enumerate() {
            groups.entry((s.backup_type.clone(), s.backup_id.clone())).or_default().push(i);
        }
        let mut kept = vec![false; snaps.len()];
        for idx in groups.values_mut() {
            idx.sort_by_key(|&i| std::cmp::Reverse(snaps[i].backup_time));
            let period = |fmt: &str, i: usize| {
                jiff::Timestamp::from_second(snaps[i].backup_time).map_or(String::new(), |t| t.strftime(fmt).to_string())
            };
            let rules: [(&str, usize); 6] = [
                ("%s", keep("keep-last")),
                ("%Y-%m-%d %H", keep("keep-hourly")),
                ("%Y-%m-%d", keep("keep-daily")),
                ("%G-%V", keep("keep-weekly")),
                ("%Y-%m", keep("keep-monthly")),
                ("%Y", keep("keep-yearly")),
            ];
            for (fmt, n) in rules.into_iter().filter(|(_, n)| *n > 0) {
                let mut seen = std::collections::BTreeSet::new();
                for &i in idx.iter() {
                    if seen.len() >= n {
                        break;
                    }
                    if seen.insert(period(fmt, i)) {
                        kept[i] = true;
                    }
                }
            }
        }
        let mut i = 0;
        snaps.retain(|s| {
            let keep = kept[i] || s.protected;
            i += 1;
            keep
        });
        "OK".into()
    }
}
