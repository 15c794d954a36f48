//! A policy's conditions from what its status says. Pure. Messages stay short
//! however many members there are: a few names, then how many more (the full
//! list is `status.members`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{job::JobPlan, pbs_jobs::PbsStep};
use crate::api::{self, BackupMember, BackupPolicySpec, BackupPolicyStatus, BackupRun, ConditionState};

/// Names listed in one condition message before "and N more".
const LISTED: usize = 5;

/// `a; b; c and 4 more`.
pub fn bounded(items: &[String]) -> String {
    match items.len() {
        n if n <= LISTED => items.join("; "),
        n => format!("{} and {} more", items[..LISTED].join("; "), n - LISTED),
    }
}

/// `backup failed for web01 (VMID 100): <error>; …`, names from `name_of`.
pub fn failed_line(run: &BackupRun, name_of: impl Fn(u32) -> Option<String>) -> String {
    let each: Vec<String> = run
        .failed
        .iter()
        .map(|f| match name_of(f.vmid) {
            Some(n) => format!("backup failed for {n} (VMID {}): {}", f.vmid, f.error),
            None => format!("backup failed for VMID {}: {}", f.vmid, f.error),
        })
        .collect();
    bounded(&each)
}

/// Whether a member without a backup is simply new: no run that started
/// after it joined has ended yet (a fresh install is not red for a day).
fn awaiting_first(m: &BackupMember, status: &BackupPolicyStatus) -> bool {
    let since = m.since.as_deref().and_then(|s| s.parse::<jiff::Timestamp>().ok());
    let covered = |r: &&BackupRun| {
        let started = r.started.parse::<jiff::Timestamp>().ok();
        r.finished.is_some() && since.is_none_or(|s| started.is_some_and(|t| t >= s))
    };
    m.newest.is_none()
        && ![status.last_run.as_ref(), status.last_scheduled_run.as_ref()]
            .into_iter()
            .flatten()
            .any(|r| covered(&r))
}

/// Ready only when the jobs match the spec (or were just made to) and every
/// member has a fresh backup that did not fail verification or a restore
/// test; members still waiting for their first run make it Progressing.
pub fn report(
    spec: &BackupPolicySpec,
    plan: &JobPlan,
    pbs_steps: &[PbsStep],
    status: &mut BackupPolicyStatus,
    generation: Option<i64>,
    wrote: bool,
) {
    let problem = (!wrote)
        .then(|| drift(spec, plan, pbs_steps))
        .flatten()
        .or_else(|| problem(spec, status));
    let waiting: Vec<String> = status.members.iter().filter(|m| awaiting_first(m, status)).map(who).collect();
    let mut all = match (problem, waiting.is_empty()) {
        (Some((reason, msg)), _) => vec![
            ConditionState::new(api::CONDITION_READY, false, reason, &msg),
            ConditionState::new(api::CONDITION_DEGRADED, true, reason, msg),
            ConditionState::new(api::CONDITION_RECONCILING, false, "AsExpected", ""),
        ],
        (None, false) => {
            let due = status.next_run.as_deref().map_or(String::new(), |t| format!(", due {t}"));
            let msg = format!(
                "{} of {} members wait for their first backup{due}: {}",
                waiting.len(),
                status.members.len(),
                bounded(&waiting)
            );
            vec![
                ConditionState::new(api::CONDITION_READY, false, "AwaitingFirstBackup", &msg),
                ConditionState::new(api::CONDITION_DEGRADED, false, "AsExpected", ""),
                ConditionState::new(api::CONDITION_RECONCILING, true, "AwaitingFirstBackup", msg),
            ]
        }
        (None, true) => vec![
            ConditionState::new(
                api::CONDITION_READY,
                true,
                "Fresh",
                format!("{} members backed up within {}", status.members.len(), spec.max_age),
            ),
            ConditionState::new(api::CONDITION_DEGRADED, false, "AsExpected", ""),
            ConditionState::new(api::CONDITION_RECONCILING, false, "AsExpected", ""),
        ],
    };
    all.push(ConditionState::new(api::CONDITION_STALLED, false, "AsExpected", ""));
    status.conditions = api::merge_conditions(&status.conditions, &all, generation, Time(jiff::Timestamp::now()));
}

fn who(m: &BackupMember) -> String {
    m.name.clone().unwrap_or_else(|| format!("VMID {}", m.vmid))
}

/// What differs on the servers and was not written (ObserveOnly, dry runs).
fn drift(spec: &BackupPolicySpec, plan: &JobPlan, pbs_steps: &[PbsStep]) -> Option<(&'static str, String)> {
    let mut what: Vec<String> = match plan {
        JobPlan::Create { id, .. } => vec![format!("job {id} does not exist")],
        JobPlan::Update { id, params } => {
            let fields: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
            vec![format!("job {id} differs in {}", fields.join(", "))]
        }
        JobPlan::Delete { id } => vec![format!("job {id} exists but the policy has no members")],
        JobPlan::NoChange { .. } | JobPlan::Absent => vec![],
    };
    what.extend(pbs_steps.iter().map(|s| format!("PBS needs: {}", s.describe())));
    (!what.is_empty()).then(|| {
        (
            "DriftDetected",
            format!("{}; not written ({:?})", what.join("; "), spec.management_mode),
        )
    })
}

/// Each member that is not fresh (and not simply new), and why.
fn unfresh(spec: &BackupPolicySpec, status: &BackupPolicyStatus) -> Vec<String> {
    let stale = status.members.iter().filter(|m| !m.fresh && !awaiting_first(m, status));
    stale
        .map(|m| match &m.newest {
            None => format!("{}: no backup", who(m)),
            Some(b) => format!("{}: newest backup {} is older than {}", who(m), b.time, spec.max_age),
        })
        .collect()
}

/// The first thing wrong with the backups themselves.
fn problem(spec: &BackupPolicySpec, status: &BackupPolicyStatus) -> Option<(&'static str, String)> {
    if status.members.is_empty() {
        let why = match &spec.pool {
            _ if spec.all_guests => "allGuests: the cluster has no guest besides those excluded".to_string(),
            Some(pool) => format!("pool {pool:?} has no guest"),
            None => "the selector matches no ProxmoxGuest and vmids is empty".into(),
        };
        return Some(("NoMembers", format!("no members: {why}")));
    }
    let unfresh = unfresh(spec, status);
    let name_of = |v: u32| status.members.iter().find(|m| m.vmid == v).and_then(|m| m.name.clone());
    // The newest run of either kind speaks for the members.
    let newest = [status.last_run.as_ref(), status.last_scheduled_run.as_ref()]
        .into_iter()
        .flatten()
        .filter(|r| r.finished.is_some())
        .max_by(|a, b| a.started.cmp(&b.started));
    if let Some(run) = newest.filter(|r| !r.failed.is_empty()) {
        let mut msg = failed_line(run, name_of);
        if !unfresh.is_empty() {
            msg = format!("{msg}; not fresh: {}", bounded(&unfresh));
        }
        return Some(("BackupFailed", msg));
    }
    if !unfresh.is_empty() {
        let msg = format!(
            "{} of {} members not fresh: {}",
            unfresh.len(),
            status.members.len(),
            bounded(&unfresh)
        );
        return Some(("BackupsNotFresh", msg));
    }
    let corrupt: Vec<String> = status
        .members
        .iter()
        .filter_map(|m| {
            Some(format!(
                "{}: {}",
                who(m),
                m.newest.as_ref().filter(|b| b.verified.as_deref() == Some("failed"))?.volid
            ))
        })
        .collect();
    if !corrupt.is_empty() {
        return Some((
            "VerificationFailed",
            format!("newest backup failed PBS verification: {}", bounded(&corrupt)),
        ));
    }
    let rt = status.last_restore_test.as_ref().filter(|t| t.finished.is_some());
    let t = rt.filter(|t| t.result.as_deref() != Some("OK"))?;
    let msg = format!(
        "restore test of {} ({}) failed: {}",
        t.backup,
        t.guest,
        t.result.clone().unwrap_or_default()
    );
    Some(("RestoreTestFailed", msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(members: usize, since: &str, runs: Option<&str>) -> BackupPolicyStatus {
        BackupPolicyStatus {
            members: (0..members)
                .map(|i| BackupMember {
                    name: Some(format!("ct{i:04}")),
                    vmid: 100 + i as u32,
                    since: Some(since.into()),
                    ..Default::default()
                })
                .collect(),
            last_scheduled_run: runs.map(|started| BackupRun {
                request: format!("schedule {started}"),
                started: started.into(),
                finished: Some(started.into()),
                result: Some("OK".into()),
                ..Default::default()
            }),
            next_run: Some("2026-12-07T02:30:00Z".into()),
            ..Default::default()
        }
    }

    fn spec() -> BackupPolicySpec {
        serde_yaml_ng::from_str("vmids: [100]\nschedule: '02:30'\nstorage: pbs1\n").unwrap()
    }

    fn condition<'a>(s: &'a BackupPolicyStatus, t: &str) -> (&'a str, &'a str, &'a str) {
        let c = api::find_condition(&s.conditions, t).unwrap();
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    #[test]
    fn new_members_wait_for_their_first_run_without_turning_red() {
        let mut s = status(3, "2026-12-06T10:00:00Z", None);
        report(&spec(), &JobPlan::Absent, &[], &mut s, Some(1), true);
        assert_eq!(condition(&s, "Degraded").0, "False");
        let (ready, reason, msg) = condition(&s, "Reconciling");
        assert_eq!((ready, reason), ("True", "AwaitingFirstBackup"));
        assert!(msg.contains("due 2026-12-07T02:30:00Z") && msg.contains("3 of 3"), "{msg}");
        // A run that started after they joined has ended and left them without a backup: stale.
        let mut s = status(3, "2026-12-06T10:00:00Z", Some("2026-12-07T02:30:00Z"));
        report(&spec(), &JobPlan::Absent, &[], &mut s, Some(1), true);
        assert_eq!(condition(&s, "Degraded").1, "BackupsNotFresh");
        // A run from before they joined does not count.
        let mut s = status(3, "2026-12-07T10:00:00Z", Some("2026-12-07T02:30:00Z"));
        report(&spec(), &JobPlan::Absent, &[], &mut s, Some(1), true);
        assert_eq!(condition(&s, "Reconciling").1, "AwaitingFirstBackup");
    }

    #[test]
    fn a_thousand_stale_members_make_a_short_message() {
        let mut s = status(1000, "2026-12-01T10:00:00Z", Some("2026-12-02T02:30:00Z"));
        report(&spec(), &JobPlan::Absent, &[], &mut s, Some(1), true);
        let (_, reason, msg) = condition(&s, "Degraded");
        assert_eq!(reason, "BackupsNotFresh");
        assert!(msg.starts_with("1000 of 1000 members not fresh: ct0000: no backup;"), "{msg}");
        assert!(msg.ends_with("and 995 more") && msg.len() < 200, "{msg}");
    }
}
