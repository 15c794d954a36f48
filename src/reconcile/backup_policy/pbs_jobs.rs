//! The Proxmox Backup Server jobs a policy asks for (prune, verify, sync and
//! the datastore's GC schedule) and the steps that get there. Ownership as
//! for the vzdump job: our id and the comment mark; a foreign job with our id
//! blocks. Pure.

use std::collections::BTreeMap;

use crate::{
    api::{PbsOptions, Retention, SyncDirection},
    providers::pbs::{Job, JobKind, Params, codec::bool_param},
    reconcile::{Blocked, backup_policy::job::job_id, ownership::Identity},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PbsStep {
    Create {
        kind: JobKind,
        params: Params,
    },
    /// Only what differs; `delete` lists fields to drop.
    Update {
        kind: JobKind,
        id: String,
        params: Params,
    },
    Delete {
        kind: JobKind,
        id: String,
    },
    SetGcSchedule {
        schedule: String,
    },
}

impl PbsStep {
    /// For events and the Degraded message: `create prune job hlo-…`.
    pub fn describe(&self) -> String {
        match self {
            PbsStep::Create { kind, params } => {
                let id = params.iter().find(|(k, _)| k == "id").map_or("", |(_, v)| v.as_str());
                format!("create {} job {id}", kind.as_str())
            }
            PbsStep::Update { kind, id, params } => {
                let fields: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
                format!("update {} job {id} ({})", kind.as_str(), fields.join(", "))
            }
            PbsStep::Delete { kind, id } => format!("delete {} job {id}", kind.as_str()),
            PbsStep::SetGcSchedule { schedule } => format!("set the garbage-collection schedule to {schedule}"),
        }
    }
}

/// PBS keep options are >= 1; 0 means "not set" here as in PVE's prune-backups.
fn keep_fields(r: &Retention) -> Vec<(&'static str, String)> {
    super::job::keep_options(r).into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

/// Fields the operator sets per kind; one of ours that is set on the server
/// but not wanted is deleted.
fn managed(kind: JobKind) -> &'static [&'static str] {
    match kind {
        JobKind::Prune => &[
            "store",
            "schedule",
            "comment",
            "keep-last",
            "keep-hourly",
            "keep-daily",
            "keep-weekly",
            "keep-monthly",
            "keep-yearly",
        ],
        JobKind::Verify => &["store", "schedule", "comment", "ignore-verified", "outdated-after"],
        JobKind::Sync => &["store", "schedule", "comment", "remote", "remote-store", "sync-direction"],
    }
}

/// The wanted fields of each configured job kind.
pub fn desired(pbs: &PbsOptions, retention: Option<&Retention>, id: &Identity) -> BTreeMap<JobKind, BTreeMap<&'static str, String>> {
    let base = |schedule: &str| {
        BTreeMap::from([
            ("store", pbs.datastore.clone()),
            ("schedule", schedule.to_string()),
            ("comment", id.mark_line()),
        ])
    };
    let mut out = BTreeMap::new();
    if let Some(p) = &pbs.prune {
        let mut f = base(&p.schedule);
        // Admission refuses a server-side prune without a retention.
        f.extend(keep_fields(retention.unwrap_or(&Retention::default())));
        out.insert(JobKind::Prune, f);
    }
    if let Some(v) = &pbs.verify {
        let mut f = base(&v.schedule);
        f.insert("ignore-verified", bool_param(v.ignore_verified));
        if let Some(days) = v.reverify_after_days {
            f.insert("outdated-after", days.to_string());
        }
        out.insert(JobKind::Verify, f);
    }
    if let Some(s) = &pbs.sync {
        let mut f = base(&s.schedule);
        f.insert("remote", s.remote.clone());
        f.insert("remote-store", s.remote_store.clone());
        let dir = match s.direction {
            SyncDirection::Pull => "pull",
            SyncDirection::Push => "push",
        };
        f.insert("sync-direction", dir.into());
        out.insert(JobKind::Sync, f);
    }
    out
}

/// Steps from the jobs there are (`jobs` by kind, as `/admin/{kind}` lists
/// them) to the wanted ones; `want` empty deletes ours.
pub fn plan(
    want: &BTreeMap<JobKind, BTreeMap<&'static str, String>>,
    jobs: &BTreeMap<JobKind, Vec<Job>>,
    id: &Identity,
    gc: Option<(&str, Option<&str>)>,
) -> Result<Vec<PbsStep>, Blocked> {
    let ours = job_id(id);
    let mut steps = vec![];
    for kind in JobKind::ALL {
        let existing = jobs.get(&kind).into_iter().flatten().find(|j| j.id == ours);
        if let Some(j) = existing
            && !j.comment().is_some_and(|c| c.contains(&id.mark_line()))
        {
            return Err(Blocked {
                reason: "Conflict",
                message: format!("a PBS {} job '{}' exists that this policy did not create", kind.as_str(), j.id),
            });
        }
        match (want.get(&kind), existing) {
            (None, None) => {}
            (None, Some(j)) => steps.push(PbsStep::Delete { kind, id: j.id.clone() }),
            (Some(w), None) => steps.push(PbsStep::Create {
                kind,
                params: std::iter::once(("id".to_string(), ours.clone()))
                    .chain(w.iter().map(|(k, v)| (k.to_string(), v.clone())))
                    .collect(),
            }),
            (Some(w), Some(j)) => {
                let mut params: Params = w
                    .iter()
                    .filter(|(k, v)| j.param(k).as_ref() != Some(*v))
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                params.extend(
                    managed(kind)
                        .iter()
                        .filter(|k| !w.contains_key(**k) && j.param(k).is_some())
                        .map(|k| ("delete".to_string(), k.to_string())),
                );
                if !params.is_empty() {
                    steps.push(PbsStep::Update {
                        kind,
                        id: j.id.clone(),
                        params,
                    });
                }
            }
        }
    }
    if let Some((wanted, current)) = gc
        && current != Some(wanted)
    {
        steps.push(PbsStep::SetGcSchedule { schedule: wanted.into() });
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BackupPolicySpec;

    fn ident() -> Identity {
        Identity {
            namespace: "home".into(),
            name: "nightly".into(),
            uid: "0a1b2c3d-4e5f-6789-abcd-ef0123456789".into(),
        }
    }

    fn spec(pbs: &str) -> BackupPolicySpec {
        serde_yaml_ng::from_str(&format!(
            "vmids: [100]\nschedule: '02:30'\nstorage: pbs1\nretention: {{keepDaily: 7, keepWeekly: 4}}\npbs: {pbs}\n"
        ))
        .unwrap()
    }

    fn want(s: &BackupPolicySpec) -> BTreeMap<JobKind, BTreeMap<&'static str, String>> {
        desired(s.pbs.as_ref().unwrap(), s.retention.as_ref(), &ident())
    }

    /// The jobs as the server would list them after `steps` created them.
    fn as_listed(steps: &[PbsStep]) -> BTreeMap<JobKind, Vec<Job>> {
        let mut out: BTreeMap<JobKind, Vec<Job>> = BTreeMap::new();
        for s in steps {
            if let PbsStep::Create { kind, params } = s {
                let fields = params
                    .iter()
                    .filter(|(k, _)| k != "id")
                    .map(|(k, v)| (k.clone(), typed(k, v)))
                    .collect();
                let id = params[0].1.clone();
                out.entry(*kind).or_default().push(Job { id, fields });
            }
        }
        out
    }

    fn typed(k: &str, v: &str) -> serde_json::Value {
        match (k.starts_with("keep-") || k == "outdated-after", v) {
            (true, _) => serde_json::json!(v.parse::<i64>().unwrap()),
            (_, "true" | "false") => serde_json::json!(v == "true"),
            _ => serde_json::json!(v),
        }
    }

    #[test]
    fn creates_each_configured_job_then_has_nothing_to_do() {
        let s = spec(
            "{endpoint: main, datastore: store1, prune: {schedule: daily}, verify: {schedule: 'sat 05:00', reverifyAfterDays: 30}, garbageCollection: {schedule: 'sun 04:00'}}",
        );
        let steps = plan(&want(&s), &BTreeMap::new(), &ident(), Some(("sun 04:00", None))).unwrap();
        assert_eq!(steps.len(), 3, "{steps:?}");
        let PbsStep::Create {
            kind: JobKind::Prune,
            params,
        } = &steps[0]
        else {
            panic!("{steps:?}")
        };
        assert!(params.contains(&("keep-daily".into(), "7".into())) && params.contains(&("id".into(), "hlo-0a1b2c3d4e5f".into())));
        assert!(matches!(&steps[2], PbsStep::SetGcSchedule { schedule } if schedule == "sun 04:00"));
        let listed = as_listed(&steps);
        assert_eq!(
            plan(&want(&s), &listed, &ident(), Some(("sun 04:00", Some("sun 04:00")))).unwrap(),
            vec![]
        );
    }

    #[test]
    fn a_retention_change_updates_only_what_differs_and_drops_unset_keeps() {
        let s = spec("{endpoint: main, datastore: store1, prune: {schedule: daily}}");
        let listed = as_listed(&plan(&want(&s), &BTreeMap::new(), &ident(), None).unwrap());
        let mut changed = s.clone();
        let r = changed.retention.as_mut().unwrap();
        r.keep_weekly = None;
        r.keep_daily = Some(14);
        let steps = plan(&want(&changed), &listed, &ident(), None).unwrap();
        assert_eq!(
            steps,
            vec![PbsStep::Update {
                kind: JobKind::Prune,
                id: "hlo-0a1b2c3d4e5f".into(),
                params: vec![("keep-daily".into(), "14".into()), ("delete".into(), "keep-weekly".into())],
            }]
        );
    }

    #[test]
    fn a_foreign_job_with_our_id_blocks_and_others_are_untouched() {
        let s = spec("{endpoint: main, datastore: store1, verify: {schedule: daily}}");
        let foreign = Job {
            id: "v-nightly".into(),
            fields: BTreeMap::from([("store".to_string(), serde_json::json!("store1"))]),
        };
        let jobs = BTreeMap::from([(JobKind::Verify, vec![foreign.clone()])]);
        let steps = plan(&want(&s), &jobs, &ident(), None).unwrap();
        assert!(matches!(&steps[..], [PbsStep::Create { kind: JobKind::Verify, .. }]), "{steps:?}");
        let clash = Job {
            id: "hlo-0a1b2c3d4e5f".into(),
            ..foreign
        };
        let jobs = BTreeMap::from([(JobKind::Verify, vec![clash])]);
        assert_eq!(plan(&want(&s), &jobs, &ident(), None).unwrap_err().reason, "Conflict");
    }

    #[test]
    fn nothing_wanted_deletes_ours_but_leaves_the_gc_schedule() {
        let s = spec(
            "{endpoint: main, datastore: store1, prune: {schedule: daily}, sync: {remote: offsite, remoteStore: b2, schedule: daily}}",
        );
        let listed = as_listed(&plan(&want(&s), &BTreeMap::new(), &ident(), None).unwrap());
        let steps = plan(&BTreeMap::new(), &listed, &ident(), None).unwrap();
        assert_eq!(steps.len(), 2);
        assert!(steps.iter().all(|s| matches!(s, PbsStep::Delete { .. })), "{steps:?}");
    }
}
