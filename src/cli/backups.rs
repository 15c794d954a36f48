//! `plan` and `apply` for BackupPolicies: members from the guests in the
//! same files (with the status `apply` just produced), one reconcile each.

use crate::{
    api::{self, BackupPolicy, ProxmoxGuest},
    cli::oneshot::{Engine, render_table},
    reconcile::{
        EventNote, ReconcileError,
        backup_policy::{self, Apis, PolicyObject, PolicyOutcome, job::JobPlan, members, pbs_jobs::PbsStep},
    },
};

pub fn policy_name(p: &BackupPolicy) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// One reconcile of `p` (a dry run writes nothing), members taken from `guests`.
pub async fn run(engine: &Engine, p: &BackupPolicy, guests: &[ProxmoxGuest], dry_run: bool) -> Result<PolicyOutcome, ReconcileError> {
    p.validate_cel().map_err(|e| ReconcileError::Config(format!("invalid spec: {e}")))?;
    let api = engine.providers.pve(&p.spec.cluster)?;
    let ns = p.metadata.namespace.as_deref().unwrap_or("default");
    let same_ns: Vec<ProxmoxGuest> = guests
        .iter()
        .filter(|g| g.metadata.namespace.as_deref().unwrap_or("default") == ns)
        .cloned()
        .collect();
    let members = members::members(p, &same_ns).map_err(ReconcileError::Config)?;
    let id = crate::reconcile::ownership::Identity::new(ns, p.metadata.name.as_deref().unwrap_or(""), p.metadata.uid.as_deref());
    let obj = PolicyObject::of(p, &id, members);
    let sink = crate::cli::oneshot::MemoryStatus::<api::BackupPolicyStatus>::default();
    let apis = Apis {
        pve: api,
        pbs: p.spec.pbs.as_ref().and_then(|x| engine.providers.pbs.get(&x.endpoint)),
        notifier: Some(&engine.providers.notifier),
    };
    backup_policy::reconcile(apis, obj, &sink, dry_run).await
}

/// The guests of the files with the status `apply` just gave them (policies' members need their VMIDs).
pub fn applied_guests(guests: &[ProxmoxGuest], statuses: &[crate::api::ProxmoxGuestStatus]) -> Vec<ProxmoxGuest> {
    guests
        .iter()
        .zip(statuses)
        .map(|(g, s)| ProxmoxGuest {
            status: Some(s.clone()),
            ..g.clone()
        })
        .collect()
}

/// What `plan` shows for a policy's job: `(symbol, what)`.
pub fn job_change(job: &JobPlan) -> Option<(char, String)> {
    match job {
        JobPlan::Create { id, params } => {
            let get = |k: &str| params.iter().find(|(key, _)| key == k).map_or("", |(_, v)| v.as_str());
            Some((
                '+',
                format!(
                    "create backup job {id}: {} to {} for VMIDs {} ({})",
                    get("schedule"),
                    get("storage"),
                    get("vmid"),
                    get("prune-backups")
                ),
            ))
        }
        JobPlan::Update { id, params } => {
            let fields: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            Some(('~', format!("update backup job {id}: {}", fields.join(", "))))
        }
        JobPlan::Delete { id } => Some(('-', format!("delete backup job {id} (no members; backups are kept)"))),
        JobPlan::NoChange { .. } | JobPlan::Absent => None,
    }
}

/// `+` create, `~` update, `-` delete, as `job_change` marks them.
pub fn pbs_symbol(step: &PbsStep) -> char {
    match step {
        PbsStep::Create { .. } => '+',
        PbsStep::Update { .. } | PbsStep::SetGcSchedule { .. } => '~',
        PbsStep::Delete { .. } => '-',
    }
}

/// `cluster default: 2 guests in no backup job: 102 lab-installer, 105 (unnamed)` for `plan`.
pub async fn unprotected_line(engine: &Engine, cluster: &str) -> Option<String> {
    use crate::providers::pve::PveApi;
    let list = engine.providers.pve.get(cluster)?.not_backed_up().await.ok()?;
    let each: Vec<String> = list
        .iter()
        .map(|g| format!("{} {}", g.vmid, g.name.as_deref().unwrap_or("(unnamed)")))
        .collect();
    Some(match each.is_empty() {
        true => format!("cluster {cluster}: every guest is in a backup job"),
        false => format!("cluster {cluster}: {} guests in no backup job: {}", each.len(), each.join(", ")),
    })
}

/// The result of applying one policy.
pub struct PolicyApplied {
    pub name: String,
    pub outcome: Result<PolicyOutcome, ReconcileError>,
}

/// Reconcile `p` until nothing of it is in flight (a "back up now" run or a
/// restore test), within `timeout`; each pass starts from the last status.
pub async fn apply(
    engine: &Engine,
    p: &BackupPolicy,
    guests: &[ProxmoxGuest],
    timeout: std::time::Duration,
    progress: &(dyn Fn(&str) + Sync),
) -> PolicyApplied {
    let name = policy_name(p);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut current = p.clone();
    loop {
        let outcome = run(engine, &current, guests, false).await;
        let Ok(out) = &outcome else {
            return PolicyApplied { name, outcome };
        };
        for EventNote { note, warning, .. } in &out.events {
            progress(&format!("{name}: {}{note}", if *warning { "warning: " } else { "" }));
        }
        if out.requeue != crate::reconcile::POLL_TASK || tokio::time::Instant::now() >= deadline {
            return PolicyApplied { name, outcome };
        }
        current.status = Some(out.status.clone());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Per member: NAME, VMID, NEWEST, VERIFIED, FRESH.
pub fn members_table(r: &PolicyApplied) -> String {
    let mut rows = vec![["GUEST", "VMID", "NEWEST BACKUP", "VERIFIED", "FRESH"].map(String::from)];
    for m in r.outcome.as_ref().map(|o| o.status.members.as_slice()).unwrap_or_default() {
        let newest = m.newest.as_ref();
        rows.push([
            format!("{}/{}", r.name, m.name.clone().unwrap_or_else(|| "-".into())),
            m.vmid.to_string(),
            newest.map_or("-".into(), |b| b.time.clone()),
            newest.and_then(|b| b.verified.clone()).unwrap_or_else(|| "-".into()),
            m.fresh.to_string(),
        ]);
    }
    render_table(&rows)
}

/// NAME, JOB, MEMBERS, FRESH, READY, MESSAGE.
pub fn table(results: &[PolicyApplied]) -> String {
    let mut rows = vec![["NAME", "JOB", "MEMBERS", "FRESH", "READY", "MESSAGE"].map(String::from)];
    for r in results {
        rows.push(match &r.outcome {
            Ok(out) => {
                let s = &out.status;
                let ready = api::find_condition(&s.conditions, api::CONDITION_READY);
                [
                    r.name.clone(),
                    s.job_id.clone().unwrap_or_else(|| "-".into()),
                    s.member_count.to_string(),
                    s.fresh.clone().unwrap_or_else(|| "-".into()),
                    ready.map_or("Unknown".into(), |c| c.status.clone()),
                    ready.map_or(String::new(), |c| c.message.clone()),
                ]
            }
            Err(e) => [r.name.clone(), "-".into(), "-".into(), "-".into(), "False".into(), e.to_string()],
        });
    }
    render_table(&rows)
}
