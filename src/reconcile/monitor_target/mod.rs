//! MonitorTarget as both front ends drive it. Its checks are not a plan
//! carried out once: under `run` the monitor is handed to the scheduler
//! (which checks it on its interval, alerts and writes its status); the
//! one-shot `apply` runs its check once and reports the result.

use std::{sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::{
    api::{self, MonitorState, MonitorTarget, MonitorTargetStatus},
    monitor::{
        probe,
        scheduler::{Key, MonitorConfig, Scheduler},
    },
    reconcile::{
        Change, Cleanup, Env, Outcome, ReconcileError, StatusSink,
        kind::{Fut, Kind, Lookup, SecretValue, guest_addresses, namespace},
    },
};

/// What a monitor's check is, for `plan`.
#[derive(Debug, Default)]
pub struct MonitorPlan {
    /// `http check of 10.0.0.5 every 30s`, once the target is known.
    pub check: Option<String>,
    /// Why there is no check yet.
    pub not_checkable: Option<String>,
}

impl MonitorPlan {
    fn of(check: &Result<MonitorConfig, String>) -> Self {
        Self {
            check: check.as_ref().ok().map(describe),
            not_checkable: check.as_ref().err().cloned(),
        }
    }
}

/// The controller's continuous checks: its scheduler, and where each
/// monitor's status goes (the monitor's status subresource).
pub trait Monitors: Send + Sync {
    fn scheduler(&self) -> &Scheduler;
    fn sink(&self, m: &MonitorTarget) -> Arc<dyn StatusSink<MonitorTargetStatus>>;
}

/// The host the check aims at: a ProxyHost's first domain or a guest's first address.
async fn target_host(m: &MonitorTarget, lookup: &dyn Lookup) -> Result<Result<Option<String>, String>, ReconcileError> {
    let ns = namespace(m);
    Ok(match &m.spec.target {
        None => Ok(None),
        Some(t) if t.kind == "ProxyHost" => {
            let domain = lookup.proxy_host(ns, &t.name).await?.and_then(|h| h.spec.domains.first().cloned());
            domain
                .map(Some)
                .ok_or_else(|| format!("target ProxyHost {} does not exist or has no domain", t.name))
        }
        Some(t) => {
            let first = guest_addresses(lookup, ns, &t.name, t.nic.as_deref())
                .await?
                .and_then(|a| a.into_iter().next());
            // Not an error a person must fix: the guest may still be booting.
            first
                .map(Some)
                .ok_or_else(|| format!("target ProxmoxGuest {} has no address yet", t.name))
        }
    })
}

/// The Secret keys the check needs.
async fn secrets(m: &MonitorTarget, lookup: &dyn Lookup) -> Result<Result<probe::Secrets, String>, ReconcileError> {
    let mut out = probe::Secrets::new();
    for r in probe::secret_refs(&m.spec) {
        match lookup.secret(namespace(m), &r).await? {
            SecretValue::Found(v) => {
                out.insert((r.name.clone(), r.key.clone()), v.expose().to_string());
            }
            SecretValue::Missing(_) => {}
            SecretValue::NotRead => return Ok(Err("refers to Secrets, which only the controller reads".into())),
        }
    }
    Ok(Ok(out))
}

/// The monitor's check, or why it cannot be built yet (a target without an
/// address, a Secret the front end does not read); only lookup failures are errors.
pub async fn resolve(m: &MonitorTarget, lookup: &dyn Lookup) -> Result<Result<MonitorConfig, String>, ReconcileError> {
    let secrets = match secrets(m, lookup).await? {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    Ok(match target_host(m, lookup).await? {
        Ok(host) => probe::build(&m.spec, host.as_deref(), &secrets, m.metadata.generation),
        // A check with its own URL or host does not need the target's address.
        Err(e) => probe::build(&m.spec, None, &secrets, m.metadata.generation).map_err(|_| e),
    })
}

/// Run the check once (the one-shot `apply`) and report it as a status.
async fn check_once(m: &MonitorTarget, c: &MonitorConfig) -> MonitorTargetStatus {
    let r = c.probe.run(c.timeout).await;
    MonitorTargetStatus {
        state: if r.ok { MonitorState::Up } else { MonitorState::Down },
        check_type: Some(c.check_type.into()),
        target: Some(c.target.clone()),
        latency: Some(format!("{}ms", r.latency.as_millis())),
        message: Some(r.message),
        observed_generation: m.metadata.generation,
        ..Default::default()
    }
}

/// The channels it notifies exist (only the controller notifies: a one-shot
/// run has no history to alert on).
fn known_channels(m: &MonitorTarget, env: Env<'_>) -> Result<(), ReconcileError> {
    let channels = m.spec.policy.notify.iter().flat_map(|n| &n.channels);
    match channels.into_iter().find(|c| !env.providers.notifier.has(c)) {
        Some(unknown) => Err(ReconcileError::Config(format!(
            "spec.notify.channels: {unknown:?} is not in the config's notifications: section"
        ))),
        None => Ok(()),
    }
}

/// `namespace`, `name`: the scheduler's key of a monitor.
pub fn key(m: &MonitorTarget) -> Key {
    (namespace(m).to_string(), m.metadata.name.clone().unwrap_or_default())
}

fn describe(c: &MonitorConfig) -> String {
    format!("{} check of {} every {}s", c.check_type, c.target, c.interval.as_secs())
}

impl Kind for MonitorTarget {
    type Status = MonitorTargetStatus;
    type Plan = MonitorPlan;
    /// The check, or why it cannot be built yet.
    type Inputs = Result<MonitorConfig, String>;
    const KIND: &'static str = "MonitorTarget";
    const FINALIZER: &'static str = api::MONITOR_FINALIZER;
    /// The scheduler writes a running monitor's status.
    const STATUS_FROM_OUTCOME: bool = false;

    fn current_status(&self) -> Option<MonitorTargetStatus> {
        self.status.clone()
    }

    fn set_status(&mut self, status: MonitorTargetStatus) {
        self.status = Some(status);
    }

    fn conditions_mut(status: &mut MonitorTargetStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }

    fn admit(&self) -> Result<(), String> {
        self.validate_cel().map_err(|e| e.to_string())
    }

    fn resolve<'a>(&'a self, _env: Env<'a>, lookup: &'a dyn Lookup) -> Fut<'a, Self::Inputs> {
        Box::pin(resolve(self, lookup))
    }

    fn plan<'a>(&'a self, _env: Env<'a>, check: &'a Self::Inputs) -> Fut<'a, Outcome<MonitorTargetStatus, MonitorPlan>> {
        Box::pin(async move {
            Ok(Outcome {
                status: self.status.clone().unwrap_or_default(),
                plan: MonitorPlan::of(check),
                events: vec![],
                requeue: Duration::from_secs(300),
            })
        })
    }

    fn reconcile<'a>(
        &'a self,
        env: Env<'a>,
        check: Self::Inputs,
        _sink: &'a dyn StatusSink<MonitorTargetStatus>,
    ) -> Fut<'a, Outcome<MonitorTargetStatus, MonitorPlan>> {
        Box::pin(async move {
            let plan = MonitorPlan::of(&check);
            let config = check.map_err(ReconcileError::Config)?;
            let current = self.status.clone().unwrap_or_default();
            let status = match env.monitors {
                Some(m) => {
                    known_channels(self, env)?;
                    m.scheduler().upsert(key(self), config, &current, m.sink(self)).await;
                    current
                }
                None => check_once(self, &config).await,
            };
            Ok(Outcome {
                status,
                plan,
                events: vec![],
                // A target's address may change without an event we watch (a ProxyHost's domains): look again now and then.
                requeue: Duration::from_secs(300),
            })
        })
    }

    fn cleanup<'a>(&'a self, env: Env<'a>, _sink: &'a dyn StatusSink<MonitorTargetStatus>) -> Fut<'a, Cleanup<MonitorTargetStatus>> {
        Box::pin(async move {
            if let Some(m) = env.monitors {
                m.scheduler().remove(&key(self));
            }
            Ok(Cleanup::Done(vec![]))
        })
    }

    fn changes(out: &Outcome<MonitorTargetStatus, MonitorPlan>) -> Vec<Change> {
        vec![match (&out.plan.check, &out.plan.not_checkable) {
            (Some(c), _) => Change::new('+', format!("{c} (the controller runs it; apply runs it once)")),
            (None, why) => Change::new('.', format!("not checkable here: {}", why.as_deref().unwrap_or_default())),
        }]
    }

    fn table_header() -> Vec<&'static str> {
        vec!["NAME", "TYPE", "TARGET", "RESULT", "LATENCY", "MESSAGE"]
    }

    fn table_row(name: &str, s: &MonitorTargetStatus, error: Option<&str>) -> Vec<String> {
        match error {
            Some(e) => vec![name.into(), "-".into(), "-".into(), "error".into(), "-".into(), e.into()],
            None => vec![
                name.into(),
                s.check_type.clone().unwrap_or_default(),
                s.target.clone().unwrap_or_default(),
                format!("{:?}", s.state),
                s.latency.clone().unwrap_or_default(),
                s.message.clone().unwrap_or_default(),
            ],
        }
    }
}
