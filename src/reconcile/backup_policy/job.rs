//! The PVE vzdump job a policy asks for, and what to do about the jobs
//! there are: create ours, update only what differs, delete ours, and never
//! touch a job the operator did not create (unless the policy adopts it). Pure.

use std::collections::BTreeMap;

use crate::{
    api::{BackupMode, BackupPolicySpec, Compression, Retention},
    providers::pve::{BackupJob, Params, codec},
    reconcile::{Blocked, ownership::Identity},
};

/// Our job's id: stable per resource UID (PVE job ids are `[a-z][a-z0-9_-]+`).
pub fn job_id(id: &Identity) -> String {
    let compact: String = id.uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
    format!("hlo-{compact}")
}

/// The keep options that are set (above 0), in PVE's and PBS's order.
pub fn keep_options(r: &Retention) -> Vec<(&'static str, u32)> {
    [
        ("keep-last", r.keep_last),
        ("keep-hourly", r.keep_hourly),
        ("keep-daily", r.keep_daily),
        ("keep-weekly", r.keep_weekly),
        ("keep-monthly", r.keep_monthly),
        ("keep-yearly", r.keep_yearly),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v.filter(|n| *n > 0)?)))
    .collect()
}

/// `prune-backups` for a retention, keys in PVE's order.
pub fn prune_string(r: &Retention) -> String {
    keep_options(r)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// vzdump's name for a mode.
pub fn mode_str(mode: BackupMode) -> &'static str {
    match mode {
        BackupMode::Snapshot => "snapshot",
        BackupMode::Suspend => "suspend",
        BackupMode::Stop => "stop",
    }
}

/// The job's fields, as they are compared and written (`vmid` sorted,
/// `prune-backups` as a property string in a fixed order).
pub fn desired(spec: &BackupPolicySpec, members: &[u32], id: &Identity) -> BTreeMap<&'static str, String> {
    let mut vmids = members.to_vec();
    vmids.sort_unstable();
    vmids.dedup();
    let mode = mode_str(spec.mode);
    let compress = match spec.compress {
        Compression::Zstd => "zstd",
        Compression::Gzip => "gzip",
        Compression::Lzo => "lzo",
        Compression::None => "0",
    };
    // Pruned on the PBS instead: PVE keeps everything it wrote.
    let prune = match spec.pbs.as_ref().and_then(|p| p.prune.as_ref()) {
        Some(_) => "keep-all=1".to_string(),
        None => prune_string(&spec.retention),
    };
    BTreeMap::from([
        ("schedule", spec.schedule.clone()),
        ("storage", spec.storage.clone()),
        ("mode", mode.to_string()),
        ("compress", compress.to_string()),
        ("vmid", vmids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
        ("prune-backups", prune),
        ("notes-template", spec.notes_template.clone()),
        ("enabled", codec::bool01(spec.enabled)),
        ("comment", id.mark_line()),
    ])
}

/// A job's fields in the form `desired` uses.
fn observed(job: &BackupJob) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    let mut put = |k: &'static str, v: Option<String>| {
        if let Some(v) = v {
            out.insert(k, v);
        }
    };
    put("schedule", job.schedule.clone());
    put("storage", job.storage.clone());
    put("mode", job.mode.clone());
    put("compress", job.compress.clone());
    put("vmid", job.vmid.as_ref().map(|v| normalize_vmids(v)));
    put("prune-backups", job.prune_backups.as_ref().map(normalize_prune));
    put("notes-template", job.notes_template.clone());
    put("enabled", Some(codec::bool01(job.is_enabled())));
    put("comment", job.comment.clone());
    out
}

fn normalize_vmids(v: &str) -> String {
    let mut ids: Vec<u32> = v.split([',', ' ', ';']).filter_map(|s| s.trim().parse().ok()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn normalize_prune(v: &serde_json::Value) -> String {
    const ORDER: [&str; 7] = [
        "keep-all",
        "keep-last",
        "keep-hourly",
        "keep-daily",
        "keep-weekly",
        "keep-monthly",
        "keep-yearly",
    ];
    let map = codec::prune_backups(v);
    ORDER
        .iter()
        .filter_map(|k| Some(format!("{k}={}", map.get(*k)?)))
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum JobPlan {
    NoChange {
        id: String,
    },
    Create {
        id: String,
        params: Params,
    },
    /// Only the fields that differ.
    Update {
        id: String,
        params: Params,
    },
    Delete {
        id: String,
    },
    /// Nothing to delete: there is no job of ours.
    #[default]
    Absent,
}

/// What to do with the jobs there are. `want` is `None` when no job should
/// exist (no members, or the policy is being deleted).
pub fn plan(
    want: Option<&BTreeMap<&'static str, String>>,
    jobs: &[BackupJob],
    id: &Identity,
    adopt: Option<&str>,
) -> Result<JobPlan, Blocked> {
    let ours_id = adopt.map_or_else(|| job_id(id), str::to_string);
    let existing = jobs.iter().find(|j| j.id == ours_id);
    if let Some(j) = existing
        && adopt.is_none()
        && !j.comment.as_deref().is_some_and(|c| c.contains(&id.mark_line()))
    {
        return Err(Blocked {
            reason: "Conflict",
            message: format!(
                "a backup job '{}' exists that this policy did not create; set adoptJobId to take it over",
                j.id
            ),
        });
    }
    if adopt.is_some() && existing.is_none() && want.is_some() {
        return Err(Blocked {
            reason: "AdoptTargetMissing",
            message: format!("adoptJobId '{ours_id}' names no backup job in the cluster"),
        });
    }
    Ok(match (want, existing) {
        (None, None) => JobPlan::Absent,
        (None, Some(j)) => JobPlan::Delete { id: j.id.clone() },
        (Some(w), None) => JobPlan::Create {
            id: ours_id.clone(),
            params: std::iter::once(("id".to_string(), ours_id))
                .chain(w.iter().map(|(k, v)| (k.to_string(), v.clone())))
                .collect(),
        },
        (Some(w), Some(j)) => {
            let have = observed(j);
            let params: Params = w
                .iter()
                .filter(|(k, v)| have.get(*k) != Some(*v))
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            let mut params = params;
            // The members are the selection: an adopted job's `all`/`pool` goes.
            let other_selection: Vec<&str> = [("all", j.all), ("pool", j.pool.is_some())]
                .into_iter()
                .filter_map(|(k, set)| set.then_some(k))
                .collect();
            if !other_selection.is_empty() {
                params.push(("delete".into(), other_selection.join(",")));
            }
            match params.is_empty() {
                true => JobPlan::NoChange { id: j.id.clone() },
                false => JobPlan::Update { id: j.id.clone(), params },
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> BackupPolicySpec {
        serde_yaml_ng::from_str(&format!(
            "selector: {{matchLabels: {{backup: nightly}}}}\nschedule: \"02:30\"\nstorage: pbs1\nretention: {{keepDaily: 7, keepWeekly: 4}}\n{extra}"
        ))
        .unwrap()
    }

    fn id() -> Identity {
        Identity::new("homelab", "nightly", Some("3f1c2b4a-9d8e-4f7a-b6c5-1d2e3f4a5b6c"))
    }

    /// The job as PVE answers it after `plan`'s create was sent.
    fn as_pve_answers(params: &Params) -> BackupJob {
        let get = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let prune: serde_json::Map<String, serde_json::Value> = codec::prune_backups(&get("prune-backups").unwrap().into())
            .into_iter()
            .map(|(k, v)| (k, serde_json::json!(v.to_string())))
            .collect();
        BackupJob {
            id: get("id").unwrap(),
            enabled: Some(get("enabled").as_deref() == Some("1")),
            schedule: get("schedule"),
            storage: get("storage"),
            mode: get("mode"),
            compress: get("compress"),
            vmid: get("vmid"),
            prune_backups: Some(serde_json::Value::Object(prune)),
            notes_template: get("notes-template"),
            comment: get("comment"),
            next_run: Some(1),
            ..Default::default()
        }
    }

    fn created(members: &[u32], s: &BackupPolicySpec) -> BackupJob {
        match plan(Some(&desired(s, members, &id())), &[], &id(), None).unwrap() {
            JobPlan::Create { params, .. } => as_pve_answers(&params),
            other => panic!("{other:?}"),
        }
    }

    fn foreign() -> BackupJob {
        BackupJob {
            id: "backup-1d0e9c44-a1b0".into(),
            schedule: Some("sat 03:00".into()),
            storage: Some("pbs1".into()),
            pool: Some("homelab".into()),
            ..Default::default()
        }
    }

    /// (what, desired job, jobs there, adoptJobId, expected plan or refusal reason).
    type Case = (
        &'static str,
        Option<BTreeMap<&'static str, String>>,
        Vec<BackupJob>,
        Option<&'static str>,
        Result<JobPlan, &'static str>,
    );

    #[test]
    fn table() {
        let s = spec("");
        let mine = created(&[101, 100], &s);
        let cases: Vec<Case> = vec![
            (
                "no job yet: create with every field",
                Some(desired(&s, &[100, 101], &id())),
                vec![foreign()],
                None,
                Ok(JobPlan::Create {
                    id: "hlo-3f1c2b4a9d8e".into(),
                    params: [
                        ("id", "hlo-3f1c2b4a9d8e"),
                        (
                            "comment",
                            "managed-by: homelab-operator homelab/nightly uid=3f1c2b4a-9d8e-4f7a-b6c5-1d2e3f4a5b6c",
                        ),
                        ("compress", "zstd"),
                        ("enabled", "1"),
                        ("mode", "snapshot"),
                        ("notes-template", "{{guestname}}"),
                        ("prune-backups", "keep-daily=7,keep-weekly=4"),
                        ("schedule", "02:30"),
                        ("storage", "pbs1"),
                        ("vmid", "100,101"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                }),
            ),
            (
                "as PVE answers it (object prune-backups, other VMID order): no change",
                Some(desired(&s, &[101, 100], &id())),
                vec![foreign(), mine.clone()],
                None,
                Ok(JobPlan::NoChange { id: mine.id.clone() }),
            ),
            (
                "a member added and the schedule changed: only those fields",
                Some(desired(&spec("").tap_schedule("sat 03:00"), &[100, 101, 102], &id())),
                vec![mine.clone()],
                None,
                Ok(JobPlan::Update {
                    id: mine.id.clone(),
                    params: vec![("schedule".into(), "sat 03:00".into()), ("vmid".into(), "100,101,102".into())],
                }),
            ),
            (
                "retention changed",
                Some(desired(&spec("").tap_retention(3), &[100, 101], &id())),
                vec![mine.clone()],
                None,
                Ok(JobPlan::Update {
                    id: mine.id.clone(),
                    params: vec![("prune-backups".into(), "keep-last=3".into())],
                }),
            ),
            (
                "no members: ours deleted",
                None,
                vec![foreign(), mine.clone()],
                None,
                Ok(JobPlan::Delete { id: mine.id.clone() }),
            ),
            ("no members, no job: nothing", None, vec![foreign()], None, Ok(JobPlan::Absent)),
            (
                "our id without our mark: refused",
                Some(desired(&s, &[100], &id())),
                vec![BackupJob {
                    comment: Some("someone's".into()),
                    ..mine.clone()
                }],
                None,
                Err("Conflict"),
            ),
            (
                "adopting a foreign job: updated, marked, its pool selection replaced by the members",
                Some(desired(&s, &[100, 101], &id())),
                vec![foreign()],
                Some("backup-1d0e9c44-a1b0"),
                Ok(JobPlan::Update {
                    id: "backup-1d0e9c44-a1b0".into(),
                    params: desired(&s, &[100, 101], &id())
                        .into_iter()
                        .filter(|(k, _)| !matches!(*k, "storage" | "enabled"))
                        .map(|(k, v)| (k.to_string(), v))
                        .chain([("delete".to_string(), "pool".to_string())])
                        .collect(),
                }),
            ),
            (
                "adopting a job that is not there",
                Some(desired(&s, &[100], &id())),
                vec![],
                Some("backup-gone"),
                Err("AdoptTargetMissing"),
            ),
        ];
        for (what, want, jobs, adopt, expected) in cases {
            let got = plan(want.as_ref(), &jobs, &id(), adopt).map_err(|b| b.reason);
            assert_eq!(got, expected, "{what}");
        }
    }

    #[test]
    fn server_side_pruning_keeps_everything_on_pve() {
        let s = spec("pbs: {endpoint: main, datastore: store1, prune: {schedule: daily}}\n");
        assert_eq!(desired(&s, &[100], &id())["prune-backups"], "keep-all=1");
        assert_eq!(desired(&spec(""), &[100], &id())["prune-backups"], "keep-daily=7,keep-weekly=4");
    }

    trait Tap {
        fn tap_schedule(self, s: &str) -> Self;
        fn tap_retention(self, keep_last: u32) -> Self;
    }

    impl Tap for BackupPolicySpec {
        fn tap_schedule(mut self, s: &str) -> Self {
            self.schedule = s.into();
            self
        }
        fn tap_retention(mut self, keep_last: u32) -> Self {
            self.retention = Retention {
                keep_last: Some(keep_last),
                ..Default::default()
            };
            self
        }
    }
}
