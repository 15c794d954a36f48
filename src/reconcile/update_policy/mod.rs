//! UpdatePolicy: runs over the members, each guest through
//! [`steps`] (snapshot → update → validate → roll back), at most
//! `maxParallel` at once; one notification per run; snapshots kept for a
//! while, then deleted (only the operator's own).

pub mod kind;
pub mod members;
pub mod report;
mod run;
pub mod script;
pub mod shell;
pub mod ssh;
pub mod steps;

use std::time::Duration;

use members::Target;

use crate::{
    api::{UpdateMode, UpdatePolicy, UpdatePolicyStatus, UpdateResult, UpdateStep},
    notify::Notifier,
    providers::pve::PveUpdateApi,
    reconcile::{Change, Outcome, POLL_TASK, RESYNC, ReconcileError, StatusSink, cache::ClusterCache, ownership::Identity},
};

/// What one reconcile reaches besides the policy.
pub struct Apis<'a, P> {
    pub pve: &'a P,
    pub cache: &'a ClusterCache,
    pub notifier: &'a Notifier,
    /// Marks a guest's monitors as in maintenance (true) or not.
    pub busy: &'a (dyn Fn(&str, bool) + Sync),
    pub validator: &'a dyn steps::Validator,
    /// How containers are reached, or why they cannot be.
    pub ssh: Result<&'a dyn shell::GuestShell, &'a str>,
}

impl<'a> Apis<'a, crate::providers::pve::PveClient> {
    /// The endpoint `cluster` names, from what every reconcile reads.
    pub fn of(
        env: crate::reconcile::Env<'a>,
        cluster: &str,
        busy: &'a (dyn Fn(&str, bool) + Sync),
        validator: &'a dyn steps::Validator,
        ssh: Result<&'a dyn shell::GuestShell, &'a str>,
    ) -> Result<Self, ReconcileError> {
        Ok(Self {
            pve: env.providers.pve(cluster)?,
            cache: env.cache,
            notifier: &env.providers.notifier,
            busy,
            validator,
            ssh,
        })
    }
}

/// What `plan` shows: per member, what a run would do (from the last check).
#[derive(Debug, Default)]
pub struct UpdatePlan {
    pub changes: Vec<Change>,
}

pub type UpdateOutcome = Outcome<UpdatePolicyStatus, UpdatePlan>;

/// What a run would do to each member, from what the last check found.
pub fn plan(policy: &UpdatePolicy, targets: &[Target]) -> UpdateOutcome {
    let mut status = policy.status.clone().unwrap_or_default();
    members::sync(&mut status.members, targets);
    let changes = status
        .members
        .iter()
        .map(|m| match (policy.spec.mode, m.checked.is_some(), m.pending) {
            (_, false, _) => Change::new('>', format!("{}: not checked yet (a run checks it first)", m.name)),
            (UpdateMode::Check, true, n) => Change::new('>', format!("{}: {n} pending, check only", m.name)),
            (UpdateMode::Apply, true, 0) => Change::new('>', format!("{}: up to date", m.name)),
            (UpdateMode::Apply, true, n) => Change::new(
                '>',
                format!(
                    "{}: snapshot, then {n} updates ({}), validate, roll back on failure",
                    m.name,
                    m.packages.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                ),
            ),
        })
        .collect();
    Outcome {
        status,
        plan: UpdatePlan { changes },
        events: vec![],
        requeue: RESYNC,
    }
}

/// One reconcile: start a run when due, move the run in flight on, delete
/// kept snapshots whose time is up, report.
pub async fn reconcile<P: PveUpdateApi>(
    apis: &Apis<'_, P>,
    policy: &UpdatePolicy,
    targets: Vec<Target>,
    request: Option<&str>,
    sink: &dyn StatusSink<UpdatePolicyStatus>,
) -> Result<UpdateOutcome, ReconcileError> {
    let mut status = policy.status.clone().unwrap_or_default();
    members::sync(&mut status.members, &targets);
    let now = jiff::Timestamp::now();
    let mut events = vec![];
    if let Some(started) = run::start_if_due(&policy.spec, &mut status, request, now)? {
        summarize(policy, &mut status);
        sink.save(&status).await.map_err(ReconcileError::Status)?;
        events.push(crate::reconcile::EventNote::normal("RunStarted", started));
    }
    let mut wait = RESYNC;
    if status.run.as_ref().is_some_and(|r| r.finished.is_none()) {
        wait = wait.min(run::advance(apis, policy, &targets, &mut status, sink).await?);
        if let Some(note) = run::finish_if_done(apis, policy, &mut status).await {
            events.push(note);
        }
    }
    // Before the deletes below save it mid-way, so every status written tells the same story.
    summarize(policy, &mut status);
    wait = wait.min(run::delete_kept_snapshots(apis, &policy.spec.cluster, &mut status, sink).await?);
    summarize(policy, &mut status);
    if let Some(next) = status.next_run.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        wait = wait.min(now.duration_until(next).unsigned_abs().max(Duration::from_secs(1)));
    }
    Ok(Outcome {
        status,
        plan: UpdatePlan::default(),
        events,
        requeue: wait.max(Duration::from_millis(200)).min(RESYNC),
    })
}

/// The figures and conditions that follow from the members' rows and the run.
fn summarize(policy: &UpdatePolicy, status: &mut UpdatePolicyStatus) {
    status.member_count = status.members.len() as u32;
    status.pending = report::pending(status);
    status.observed_generation = policy.metadata.generation;
    report::set_conditions(status, policy.metadata.generation, None);
}

/// The subject of a policy's notifications.
fn subject(policy: &UpdatePolicy) -> String {
    let id = Identity::of(policy);
    format!("UpdatePolicy {}/{}", id.namespace, id.name)
}

/// Whether a member's result counts as a failure (for `stopOnFailure` and Degraded).
fn failed(result: Option<UpdateResult>) -> bool {
    matches!(result, Some(UpdateResult::RolledBack | UpdateResult::Failed))
}

/// Steps during which the guest may be down or changing: its monitors are in maintenance.
fn guest_busy(step: UpdateStep) -> bool {
    matches!(
        step,
        UpdateStep::Update | UpdateStep::Reboot | UpdateStep::Validate | UpdateStep::Rollback | UpdateStep::Revalidate
    )
}

/// Requeue while a run is in flight.
const POLL: Duration = POLL_TASK;
