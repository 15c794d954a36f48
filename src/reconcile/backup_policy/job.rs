//! The PVE vzdump job a policy asks for, and what to do about the jobs
//! there are: create ours, update only what differs, delete ours, and never
//! touch a job the operator did not create (unless the policy adopts it). Pure.

use std::collections::BTreeMap;

use crate::{
    api::{BackupMode, BackupPolicySpec, Compression, Retention},
    providers::pve::{BackupJob, Params, codec},
    reconcile::{
        Blocked,
        ownership::{Identity, has_mark},
    },
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

/// `prune-backups` for a retention, keys in PVE's order; `""` (not set: the
/// storage's retention applies) without one.
pub fn prune_string(r: Option<&Retention>) -> String {
    let Some(r) = r else { return String::new() };
    if r.keep_all == Some(true) {
        return "keep-all=1".into();
    }
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

/// vzdump's name for a compression (`0`: none, its default).
pub fn compress_str(c: Compression) -> &'static str {
    match c {
        Compression::Zstd => "zstd",
        Compression::Gzip => "gzip",
        Compression::Lzo => "lzo",
        Compression::None => "0",
    }
}

/// How a job picks its guests: exactly one of these keys is set, the others are not.
const SELECTION: [&str; 4] = ["vmid", "all", "exclude", "pool"];

/// The job's fields, as they are compared and written (`vmid` sorted,
/// `prune-backups` as a property string in a fixed order). An empty value is
/// a field the job must not have (another selection, no notes, the storage's
/// retention).
pub fn desired(spec: &BackupPolicySpec, members: &[u32], id: &Identity) -> BTreeMap<&'static str, String> {
    // Pruned on the PBS instead: PVE keeps everything it wrote.
    let prune = match spec.pbs.as_ref().and_then(|p| p.prune.as_ref()) {
        Some(_) => "keep-all=1".to_string(),
        None => prune_string(spec.retention.as_ref()),
    };
    let mut job = BTreeMap::from([
        ("schedule", spec.schedule.clone()),
        ("storage", spec.storage.clone()),
        ("mode", mode_str(spec.mode).to_string()),
        ("compress", compress_str(spec.compress).to_string()),
        ("prune-backups", prune),
        ("notes-template", spec.notes_template.clone()),
        ("enabled", codec::bool01(spec.enabled)),
        ("comment", id.mark_line()),
    ]);
    job.extend(SELECTION.map(|k| (k, String::new())));
    if spec.all_guests {
        job.insert("all", "1".into());
        job.insert("exclude", vmid_list(&spec.exclude));
    } else if let Some(pool) = &spec.pool {
        job.insert("pool", pool.clone());
    } else {
        job.insert("vmid", vmid_list(members));
    }
    job
}

fn vmid_list(ids: &[u32]) -> String {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// A job's fields in the form `desired` uses, PVE's defaults filled in.
fn observed(job: &BackupJob) -> BTreeMap<&'static str, String> {
    let compress = match job.compress.as_deref() {
        None | Some("0") => "0",
        // vzdump's old "1" is lzo.
        Some("1") => "lzo",
        Some(other) => other,
    };
    let list = |v: &Option<String>| v.as_deref().map(normalize_vmids).unwrap_or_default();
    BTreeMap::from([
        ("schedule", job.schedule.clone().unwrap_or_default()),
        ("storage", job.storage.clone().unwrap_or_default()),
        ("mode", job.mode.clone().unwrap_or_else(|| "snapshot".into())),
        ("compress", compress.to_string()),
        ("vmid", list(&job.vmid)),
        ("all", if job.all { "1".into() } else { String::new() }),
        ("exclude", list(&job.exclude)),
        ("pool", job.pool.clone().unwrap_or_default()),
        ("prune-backups", job.prune_backups.as_ref().map(normalize_prune).unwrap_or_default()),
        ("notes-template", job.notes_template.clone().unwrap_or_default()),
        ("enabled", codec::bool01(job.is_enabled())),
        ("comment", job.comment.clone().unwrap_or_default()),
    ])
}

/// Whether an update only adds the mark to the comment (adopting a job as it is).
pub fn marks_only(params: &Params) -> bool {
    matches!(params.as_slice(), [(k, v)] if k == "comment" && has_mark(v))
}

/// The comment an adopted job gets: its own words, then our mark (one line: jobs.cfg has no others).
fn marked_comment(existing: &str, mark: &str) -> String {
    const MAX: usize = 512;
    let own = existing.trim();
    if own.is_empty() || own.contains(mark) {
        return if own.is_empty() { mark.to_string() } else { own.to_string() };
    }
    let room = MAX.saturating_sub(mark.len() + 3);
    let own: String = own.chars().take(room).collect();
    format!("{own} | {mark}")
}

fn normalize_vmids(v: &str) -> String {
    let ids: Vec<u32> = v.split([',', ' ', ';']).filter_map(|s| s.trim().parse().ok()).collect();
    vmid_list(&ids)
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
                .chain(w.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.clone())))
                .collect(),
        },
        (Some(w), Some(j)) => match update_params(w, j, &id.mark_line()) {
            params if params.is_empty() => JobPlan::NoChange { id: j.id.clone() },
            params => JobPlan::Update { id: j.id.clone(), params },
        },
    })
}

/// The fields of `job` that differ from `want`: set, or named in `delete`.
fn update_params(want: &BTreeMap<&'static str, String>, job: &BackupJob, mark: &str) -> Params {
    let have = observed(job);
    let mut want = want.clone();
    want.insert("comment", marked_comment(&have["comment"], mark));
    let differs = |k: &&str, v: &String| have.get(k).is_none_or(|h| h != v);
    let mut params: Params = want
        .iter()
        .filter(|(k, v)| !v.is_empty() && differs(k, v))
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let gone: Vec<&str> = want
        .iter()
        .filter(|(k, v)| v.is_empty() && have.get(*k).is_some_and(|h| !h.is_empty()))
        .map(|(k, _)| *k)
        .collect();
    if !gone.is_empty() {
        params.push(("delete".into(), gone.join(",")));
    }
    params
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
                        .filter(|(k, v)| !v.is_empty() && !matches!(*k, "storage" | "enabled" | "mode"))
                        .map(|(k, v)| (k.to_string(), v))
                        .chain([("delete".to_string(), "pool".to_string())])
                        .collect(),
                }),
            ),
            (
                "adopting a job with a comment: its words stay, the mark follows on the same line",
                Some(desired(&s, &[100, 101], &id())),
                vec![BackupJob {
                    comment: Some("nightly to PBS".into()),
                    ..mine.clone()
                }],
                Some("hlo-3f1c2b4a9d8e"),
                Ok(JobPlan::Update {
                    id: mine.id.clone(),
                    params: vec![("comment".into(), format!("nightly to PBS | {}", id().mark_line()))],
                }),
            ),
            (
                "the whole cluster but two: all and exclude set, the VMID list deleted",
                Some(desired(&spec("").tap_all(&[250, 200]), &[100, 101], &id())),
                vec![mine.clone()],
                None,
                Ok(JobPlan::Update {
                    id: mine.id.clone(),
                    params: vec![
                        ("all".into(), "1".into()),
                        ("exclude".into(), "200,250".into()),
                        ("delete".into(), "vmid".into()),
                    ],
                }),
            ),
            (
                "no notes and the storage's retention: both deleted, not sent empty",
                Some(desired(&spec("notesTemplate: ''").tap_no_retention(), &[100, 101], &id())),
                vec![mine.clone()],
                None,
                Ok(JobPlan::Update {
                    id: mine.id.clone(),
                    params: vec![("delete".into(), "notes-template,prune-backups".into())],
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
        fn tap_all(self, exclude: &[u32]) -> Self;
        fn tap_no_retention(self) -> Self;
    }

    impl Tap for BackupPolicySpec {
        fn tap_schedule(mut self, s: &str) -> Self {
            self.schedule = s.into();
            self
        }
        fn tap_retention(mut self, keep_last: u32) -> Self {
            self.retention = Some(Retention {
                keep_last: Some(keep_last),
                ..Default::default()
            });
            self
        }
        fn tap_all(mut self, exclude: &[u32]) -> Self {
            self.selector = None;
            self.all_guests = true;
            self.exclude = exclude.to_vec();
            self
        }
        fn tap_no_retention(mut self) -> Self {
            self.retention = None;
            self
        }
    }
}
