//! The BackupPolicy a vzdump job says, for `export`. Pure: planning it
//! against the same job changes nothing but the ownership mark in its comment.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::{
    api::{BackupMode, BackupPolicySpec, Compression, DeletionPolicy, ManagementMode, Retention},
    providers::pve::{BackupJob, codec},
};

/// The label an exported guest carries for each exported job that backs it up.
pub fn member_label(policy: &str) -> String {
    format!("backup.homelab.dev/{policy}")
}

/// A job as a policy, and what of it the spec does not say.
#[derive(Debug)]
pub struct ExportedPolicy {
    pub spec: BackupPolicySpec,
    /// `key=value` of the job's options the spec has no field for (kept on the job as they are).
    pub unexpressed: Vec<String>,
    /// The job's VMIDs whose guests were exported too: they get `member_label` and the selector picks them.
    pub labelled: Vec<u32>,
}

/// Options every job has that say nothing about what it does.
const BOOKKEEPING: [&str; 2] = ["type", "id"];

/// The policy for `job`, adopting it (`Retain`: deleting the policy keeps the job).
/// `exported` maps the VMIDs exported as ProxmoxGuests in the same run to their names.
pub fn spec_of(cluster: &str, name: &str, job: &BackupJob, exported: &BTreeMap<u32, String>) -> Result<ExportedPolicy, String> {
    let (Some(schedule), Some(storage)) = (job.schedule.clone(), job.storage.clone()) else {
        return Err(format!(
            "backup job {}: it has no schedule or writes to a directory (dumpdir), not a storage; adopt it by hand",
            job.id
        ));
    };
    let vmids: Vec<u32> = job
        .vmid
        .as_deref()
        .unwrap_or("")
        .split([',', ' ', ';'])
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let (labelled, listed): (Vec<u32>, Vec<u32>) = vmids.iter().partition(|v| exported.contains_key(v));
    let selector = (!labelled.is_empty()).then(|| LabelSelector {
        match_labels: Some(BTreeMap::from([(member_label(name), "true".to_string())])),
        match_expressions: None,
    });
    let spec = BackupPolicySpec {
        cluster: cluster.to_string(),
        selector,
        vmids: listed,
        all_guests: job.all,
        exclude: list(job.exclude.as_deref()),
        pool: job.pool.clone(),
        max_age: max_age_for(&schedule),
        schedule,
        storage,
        mode: mode_of(job.mode.as_deref()),
        compress: compression_of(job.compress.as_deref()),
        notes_template: job.notes_template.clone().unwrap_or_default(),
        enabled: job.is_enabled(),
        retention: job.prune_backups.as_ref().map(retention_of),
        pbs: None,
        restore_test: None,
        notify: vec![],
        deletion_policy: DeletionPolicy::Retain,
        adopt_job_id: Some(job.id.clone()),
        management_mode: ManagementMode::Reconcile,
    };
    let unexpressed = job
        .other
        .iter()
        .filter(|(k, _)| !BOOKKEEPING.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
        .collect();
    Ok(ExportedPolicy {
        spec,
        unexpressed,
        labelled,
    })
}

fn list(v: Option<&str>) -> Vec<u32> {
    v.unwrap_or("")
        .split([',', ' ', ';'])
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

fn mode_of(mode: Option<&str>) -> BackupMode {
    match mode {
        Some("suspend") => BackupMode::Suspend,
        Some("stop") => BackupMode::Stop,
        _ => BackupMode::Snapshot,
    }
}

/// vzdump's default is no compression; its old `1` is lzo.
fn compression_of(compress: Option<&str>) -> Compression {
    match compress {
        Some("zstd") => Compression::Zstd,
        Some("gzip") => Compression::Gzip,
        Some("lzo" | "1") => Compression::Lzo,
        _ => Compression::None,
    }
}

fn retention_of(v: &serde_json::Value) -> Retention {
    let keep = codec::prune_backups(v);
    let get = |k: &str| keep.get(k).map(|n| *n as u32).filter(|n| *n > 0);
    Retention {
        keep_all: (keep.get("keep-all") == Some(&1)).then_some(true),
        keep_last: get("keep-last"),
        keep_hourly: get("keep-hourly"),
        keep_daily: get("keep-daily"),
        keep_weekly: get("keep-weekly"),
        keep_monthly: get("keep-monthly"),
        keep_yearly: get("keep-yearly"),
    }
}

/// How old a member's newest backup may get before it is stale, for a job on
/// `schedule` (a PVE calendar event): the longest wait between two runs, and
/// two hours for the run itself. A weekly job must not be reported stale on
/// its second day.
pub fn max_age_for(schedule: &str) -> String {
    let s = schedule.trim();
    let days = match s {
        "minutely" | "hourly" => return "2h".into(),
        "daily" => 1,
        "weekly" => 7,
        "monthly" => 31,
        "quarterly" => 92,
        "semiannually" => 183,
        "yearly" | "annually" => 366,
        _ => longest_gap_in_days(s),
    };
    format!("{days}d2h")
}

/// Days between runs of an event like `sat 03:00`, `mon,thu 02:00`, `*-*-01 02:00` or `02:30`.
fn longest_gap_in_days(s: &str) -> u32 {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let first = s.split_whitespace().next().unwrap_or("");
    // A date `Y-M-D` with a fixed day or month runs monthly or yearly.
    let date: Vec<&str> = first.split('-').collect();
    if date.len() == 3 {
        return match (date[1], date[2]) {
            (m, _) if !m.contains('*') && !m.contains('/') && !m.contains(',') => 366,
            (_, d) if !d.contains('*') => 31,
            _ => 1,
        };
    }
    if !first.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return 1;
    }
    let index = |d: &str| DAYS.iter().position(|x| *x == d);
    let mut on = [false; 7];
    for part in first.split(',') {
        match part.split_once("..") {
            Some((a, b)) => {
                if let (Some(a), Some(b)) = (index(a), index(b)) {
                    (a..=b).for_each(|i| on[i] = true);
                }
            }
            None => {
                if let Some(i) = index(part) {
                    on[i] = true;
                }
            }
        }
    }
    let set: Vec<usize> = (0..7).filter(|i| on[*i]).collect();
    if set.is_empty() {
        return 1;
    }
    set.iter()
        .enumerate()
        .map(|(n, d)| (set[(n + 1) % set.len()] + 7 - d - 1) % 7 + 1)
        .max()
        .unwrap_or(7) as u32
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reconcile::{
        backup_policy::job::{JobPlan, desired, plan},
        ownership::Identity,
    };

    fn job(extra: serde_json::Value) -> BackupJob {
        let mut v = json!({"id": "backup-5e1f0a3c-01ab", "type": "vzdump", "schedule": "sat 03:00",
            "storage": "pbs1", "enabled": 1, "comment": "weekly, all but the big one"});
        v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    /// The job exported, then planned against itself: only the mark changes.
    fn only_the_mark(j: &BackupJob, exported: &BTreeMap<u32, String>, members: &[u32]) -> ExportedPolicy {
        let e = spec_of("default", "weekly", j, exported).unwrap();
        let id = Identity::new("homelab", "weekly", Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"));
        let got = plan(Some(&desired(&e.spec, members, &id)), std::slice::from_ref(j), &id, Some(&j.id)).unwrap();
        let JobPlan::Update { params, .. } = got else { panic!("{got:?}") };
        assert_eq!(params.len(), 1, "{params:?}");
        assert_eq!(params[0].0, "comment");
        assert_eq!(params[0].1, format!("{} | {}", j.comment.as_deref().unwrap(), id.mark_line()));
        e
    }

    #[test]
    fn a_web_ui_job_over_all_guests_adopts_with_only_the_mark() {
        // As the web UI writes it: no mode, no compress beyond its choice, PVE's answer shapes.
        let j = job(
            json!({"all": 1, "exclude": "105,9000", "compress": "zstd", "notes-template": "{{guestname}}",
            "prune-backups": {"keep-last": "3", "keep-weekly": "2"}, "mailnotification": "failure", "node": "pve1"}),
        );
        let e = only_the_mark(&j, &BTreeMap::new(), &[]);
        assert!(e.spec.all_guests);
        assert_eq!(e.spec.exclude, [105, 9000]);
        assert_eq!(e.spec.max_age, "7d2h");
        assert_eq!(e.unexpressed, ["mailnotification=failure", "node=pve1"]);
    }

    #[test]
    fn a_bare_job_keeps_its_absent_options_absent() {
        // No compress, mode, notes or retention: vzdump's defaults and the storage's retention.
        let j = job(json!({"vmid": "101,100,250"}));
        let exported = BTreeMap::from([(100, "web".to_string()), (101, "db".to_string())]);
        let e = only_the_mark(&j, &exported, &[100, 101, 250]);
        assert_eq!(e.spec.compress, Compression::None);
        assert_eq!(e.spec.notes_template, "");
        assert_eq!(e.spec.retention, None);
        assert_eq!(e.labelled, [101, 100]);
        assert_eq!(e.spec.vmids, [250]);
        let labels = e.spec.selector.unwrap().match_labels.unwrap();
        assert_eq!(labels.get("backup.homelab.dev/weekly").map(String::as_str), Some("true"));
    }

    #[test]
    fn a_pool_job_with_keep_all_and_gzip() {
        let j = job(json!({"pool": "homelab", "compress": "gzip", "mode": "stop", "enabled": 0,
            "prune-backups": {"keep-all": "1"}}));
        let e = only_the_mark(&j, &BTreeMap::new(), &[]);
        assert_eq!(e.spec.pool.as_deref(), Some("homelab"));
        assert_eq!(e.spec.retention.and_then(|r| r.keep_all), Some(true));
        assert!(!e.spec.enabled);
    }

    #[test]
    fn a_job_without_a_storage_is_not_exported() {
        let mut j = job(json!({"vmid": "100", "dumpdir": "/mnt/backup"}));
        j.storage = None;
        assert!(spec_of("default", "x", &j, &BTreeMap::new()).unwrap_err().contains("dumpdir"));
    }

    #[test]
    fn max_age_follows_the_schedule() {
        for (schedule, age) in [
            ("02:30", "1d2h"),
            ("daily", "1d2h"),
            ("*-*-* 02:00", "1d2h"),
            ("sat 03:00", "7d2h"),
            ("weekly", "7d2h"),
            ("mon,thu 01:00", "4d2h"),
            ("mon..fri 22:00", "3d2h"),
            ("*-*-01 04:00", "31d2h"),
            ("hourly", "2h"),
        ] {
            assert_eq!(max_age_for(schedule), age, "{schedule}");
        }
    }
}
