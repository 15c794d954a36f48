//! UpdatePolicy as both front ends drive it.

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::{
    Apis, UpdateOutcome,
    members::{self, Target},
    shell::{Guest, GuestShell},
    ssh::SshShell,
    steps::Validator,
};
use crate::{
    api::{self, UpdatePolicy, UpdatePolicyStatus},
    monitor::scheduler::MonitorConfig,
    reconcile::{
        Change, Cleanup, Env, EventNote, ReconcileError, StatusSink,
        kind::{Fut, Kind, Lookup, Pass, SecretValue, namespace, ready_cells},
        monitor_target,
    },
};

/// One monitor aimed at a member: its check, or why it cannot run.
pub struct MonitorCheck {
    pub guest: String,
    pub monitor: String,
    pub check: Result<MonitorConfig, String>,
}

/// The members and their monitors' checks, resolved.
pub struct UpdateInputs {
    pub targets: Vec<Target>,
    pub checks: Vec<MonitorCheck>,
    /// How containers are reached, or why they cannot be.
    pub ssh: Result<SshShell, String>,
}

/// Every monitor aimed at the guest is Up now (each checked once, here).
impl Validator for UpdateInputs {
    fn problems<'a>(&'a self, guest: &'a Guest) -> BoxFuture<'a, Result<Vec<String>, ReconcileError>> {
        Box::pin(async move {
            let mut out = vec![];
            for c in self.checks.iter().filter(|c| c.guest == guest.name) {
                match &c.check {
                    Ok(config) => {
                        let r = config.probe.run(config.timeout).await;
                        if !r.ok {
                            out.push(format!("MonitorTarget {} is Down: {}", c.monitor, r.message));
                        }
                    }
                    Err(why) => out.push(format!("MonitorTarget {} cannot check: {why}", c.monitor)),
                }
            }
            Ok(out)
        })
    }
}

async fn resolve(p: &UpdatePolicy, lookup: &dyn Lookup) -> Result<UpdateInputs, ReconcileError> {
    let ns = namespace(p);
    let guests = lookup.guests(ns).await?;
    let monitors = lookup.monitors(ns).await?;
    let targets = members::targets(p, &guests, &monitors).map_err(ReconcileError::Config)?;
    let mut checks = vec![];
    for t in &targets {
        for m in &t.monitors {
            checks.push(MonitorCheck {
                guest: t.name.clone(),
                monitor: m.metadata.name.clone().unwrap_or_default(),
                check: monitor_target::resolve(m, lookup).await?,
            });
        }
    }
    let ssh = ssh_shell(p, lookup, &targets).await?;
    Ok(UpdateInputs { targets, checks, ssh })
}

/// The policy's SSH with its Secrets; a Secret that is missing needs a person (Stalled).
async fn ssh_shell(p: &UpdatePolicy, lookup: &dyn Lookup, targets: &[Target]) -> Result<Result<SshShell, String>, ReconcileError> {
    let Some(spec) = &p.spec.ssh else {
        return Ok(Err(
            "a container has no guest agent: set spec.ssh to reach containers over SSH".into()
        ));
    };
    let ns = namespace(p);
    let mut values = vec![];
    for (field, key) in [
        ("privateKeySecret", &spec.private_key_secret),
        ("knownHostsSecret", &spec.known_hosts_secret),
    ] {
        match lookup.secret(ns, key).await.map_err(|e| e.about(&format!("spec.ssh.{field}")))? {
            SecretValue::Found(v) => values.push(v),
            SecretValue::Missing(why) => return Err(ReconcileError::Config(format!("spec.ssh.{field}: {why}"))),
            SecretValue::NotRead => return Ok(Err("SSH keys are Secrets, which plan and apply do not read".into())),
        }
    }
    let addresses = targets.iter().filter_map(|t| Some((t.name.clone(), t.address.clone()?))).collect();
    SshShell::new(spec, &values[0], &values[1], addresses)
        .map(Ok)
        .map_err(ReconcileError::Config)
}

fn request(p: &UpdatePolicy) -> Option<&str> {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(api::UPDATE_NOW_ANNOTATION))
        .map(String::as_str)
}

impl Kind for UpdatePolicy {
    type Status = UpdatePolicyStatus;
    type Plan = super::UpdatePlan;
    type Inputs = UpdateInputs;
    const KIND: &'static str = "UpdatePolicy";
    const FINALIZER: &'static str = api::UPDATE_FINALIZER;

    fn current_status(&self) -> Option<UpdatePolicyStatus> {
        self.status.clone()
    }

    fn set_status(&mut self, status: UpdatePolicyStatus) {
        self.status = Some(status);
    }

    fn conditions_mut(status: &mut UpdatePolicyStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }

    fn admit(&self) -> Result<(), String> {
        self.validate_cel().map_err(|e| e.to_string())
    }

    fn resolve<'a>(&'a self, _env: Env<'a>, lookup: &'a dyn Lookup) -> Fut<'a, UpdateInputs> {
        Box::pin(resolve(self, lookup))
    }

    fn plan<'a>(&'a self, env: Env<'a>, inputs: &'a UpdateInputs) -> Fut<'a, UpdateOutcome> {
        Box::pin(async move {
            env.providers.pve(&self.spec.cluster)?;
            Ok(super::plan(self, &inputs.targets))
        })
    }

    fn reconcile<'a>(&'a self, env: Env<'a>, inputs: UpdateInputs, sink: &'a dyn StatusSink<UpdatePolicyStatus>) -> Fut<'a, UpdateOutcome> {
        Box::pin(async move {
            let ns = namespace(self).to_string();
            let busy = move |guest: &str, busy: bool| {
                if let Some(m) = env.monitors {
                    m.scheduler().guest_busy(&ns, guest, busy);
                }
            };
            let ssh = match &inputs.ssh {
                Ok(shell) => Ok(shell as &dyn GuestShell),
                Err(why) => Err(why.as_str()),
            };
            let apis = Apis::of(env, &self.spec.cluster, &busy, &inputs, ssh)?;
            super::reconcile(&apis, self, inputs.targets.clone(), request(self), sink).await
        })
    }

    fn cleanup<'a>(&'a self, env: Env<'a>, sink: &'a dyn StatusSink<UpdatePolicyStatus>) -> Fut<'a, Cleanup<UpdatePolicyStatus>> {
        Box::pin(async move { cleanup(self, env, sink).await })
    }

    fn changes(out: &UpdateOutcome) -> Vec<Change> {
        out.plan.changes.clone()
    }

    /// A run started by `apply` is followed until it ends.
    fn next_pass(&self, out: &UpdateOutcome) -> Pass {
        match out.status.run.as_ref().is_some_and(|r| r.finished.is_none()) || !out.status.snapshots.iter().all(|k| k.task.is_none()) {
            true => Pass::Again(out.requeue.min(std::time::Duration::from_millis(500))),
            false => Pass::Done,
        }
    }

    fn table_header() -> Vec<&'static str> {
        vec!["NAME", "MODE", "MEMBERS", "PENDING", "LAST RUN", "READY", "MESSAGE"]
    }

    fn table_row(name: &str, s: &UpdatePolicyStatus, error: Option<&str>) -> Vec<String> {
        let mut row = vec![name.to_string()];
        let mode = s.run.as_ref().map_or("-".to_string(), |r| format!("{:?}", r.mode));
        row.extend([mode, s.member_count.to_string(), s.pending.to_string()]);
        row.push(s.last_result.clone().unwrap_or_else(|| "-".into()));
        row.extend(ready_cells(&s.conditions, error));
        row
    }
}

/// Deleting the policy: the snapshots it keeps go now; a snapshot of a
/// member whose update was in flight stays (the guest may need it), named in an Event.
async fn cleanup(
    p: &UpdatePolicy,
    env: Env<'_>,
    sink: &dyn StatusSink<UpdatePolicyStatus>,
) -> Result<Cleanup<UpdatePolicyStatus>, ReconcileError> {
    let mut status = p.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now().to_string();
    for k in &mut status.snapshots {
        k.keep_until = now.clone();
    }
    let noop = |_: &str, _: bool| {};
    let apis = Apis::of(env, &p.spec.cluster, &noop, &NoValidator, Err("not needed to delete snapshots"))?;
    super::run::delete_kept_snapshots(&apis, &p.spec.cluster, &mut status, sink).await?;
    if !status.snapshots.is_empty() {
        return Ok(Cleanup::Requeue {
            status,
            events: vec![],
            after: std::time::Duration::from_secs(1),
        });
    }
    let left: Vec<String> = status
        .members
        .iter()
        .filter_map(|m| {
            let r = m.last_run.as_ref()?;
            (r.step != api::UpdateStep::Done).then_some(())?;
            r.snapshot.as_ref().map(|s| format!("{s} on VMID {}", m.vmid))
        })
        .collect();
    let events = match left.is_empty() {
        true => vec![],
        false => vec![EventNote::warning(
            "SnapshotsLeft",
            format!("an update was in flight; its snapshots are left for you: {}", left.join(", ")),
        )],
    };
    Ok(Cleanup::Done(events))
}

struct NoValidator;

impl Validator for NoValidator {
    fn problems<'a>(&'a self, _guest: &'a Guest) -> BoxFuture<'a, Result<Vec<String>, ReconcileError>> {
        Box::pin(async { Ok(vec![]) })
    }
}
