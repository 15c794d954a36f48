//! DnsRecord: read the RRset, plan, write, report.

pub mod exported;
mod kind;
pub mod plan;
pub mod zones;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Blocked, EventNote, Outcome, RESYNC, ReconcileError, conditions, ownership::Identity};
use crate::{
    api::{self, ConditionState, DnsRecordSpec, DnsRecordStatus, RecordType},
    providers::dns::{DnsApi, RecordSet, absolute, fqdn},
};
use plan::{DnsAction, DnsPlan, normalize};

/// The addresses of the ProxmoxGuest a record targets, as the caller found them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The spec lists values itself.
    NoTarget,
    /// The guest does not exist (yet).
    Missing,
    /// `status.ips` of the guest.
    Ips(Vec<String>),
}

pub struct DnsObject<'a> {
    pub id: &'a Identity,
    pub spec: &'a DnsRecordSpec,
    pub status: DnsRecordStatus,
    pub generation: Option<i64>,
    pub target: Target,
}

pub type DnsOutcome = Outcome<DnsRecordStatus, DnsPlan>;

/// How long to wait for a target guest to get an address.
const WAIT_TARGET: Duration = Duration::from_secs(30);

fn set_conditions(status: &mut DnsRecordStatus, generation: Option<i64>, wanted: &[ConditionState]) {
    status.conditions = api::merge_conditions(&status.conditions, wanted, generation, Time(jiff::Timestamp::now()));
}

/// The values the spec asks for (from `values` or the target guest's addresses).
fn desired_values(spec: &DnsRecordSpec, target: &Target) -> Result<Vec<String>, (&'static str, String)> {
    let raw = match target {
        Target::NoTarget => spec.values.clone(),
        Target::Missing => {
            let name = spec.target.as_ref().map(|t| t.name.clone()).unwrap_or_default();
            return Err(("TargetNotFound", format!("waiting for ProxmoxGuest {name:?} in this namespace")));
        }
        Target::Ips(ips) => {
            let v6 = spec.record_type == RecordType::AAAA;
            let picked: Vec<String> = ips
                .iter()
                .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_ipv6() == v6))
                .cloned()
                .collect();
            if picked.is_empty() {
                let name = spec.target.as_ref().map(|t| t.name.clone()).unwrap_or_default();
                let fam = if v6 { "IPv6" } else { "IPv4" };
                return Err((
                    "TargetHasNoAddress",
                    format!("waiting for ProxmoxGuest {name:?} to report an {fam} address"),
                ));
            }
            picked
        }
    };
    normalize(spec.record_type, &raw).map_err(|m| ("InvalidValue", m))
}

/// The record observed and planned.
struct Observed {
    status: DnsRecordStatus,
    generation: Option<i64>,
    zone: String,
    rtype: &'static str,
    /// The values the spec asks for.
    values: Vec<String>,
    observed: Option<RecordSet>,
    plan: DnsPlan,
}

/// Read the RRset and plan; `Err` carries the outcome when the reconcile ends
/// here (waiting for the target, an invalid value, a conflict).
async fn observe<D: DnsApi>(dns: &D, obj: DnsObject<'_>) -> Result<Result<Observed, DnsOutcome>, ReconcileError> {
    let DnsObject {
        id,
        spec,
        mut status,
        generation,
        target,
    } = obj;
    let zone = absolute(&spec.zone);
    let name = fqdn(&spec.name, &zone);
    status.fqdn = Some(name.clone());
    status.observed_generation = generation;
    let values = match desired_values(spec, &target) {
        Ok(v) => v,
        Err((reason, message)) => return Ok(Err(not_writable(status, generation, reason, message))),
    };
    let rtype = spec.record_type.as_str();
    let desired = RecordSet {
        name: name.clone(),
        rtype: rtype.into(),
        ttl: spec.ttl,
        values: values.clone(),
        mark: Some(id.mark_line()),
    };
    let observed = dns
        .get(&zone, &name, rtype)
        .await
        .map_err(|e| ReconcileError::Dns {
            step: format!("reading {name} {rtype}"),
            source: e,
        })?
        .map(|mut o| {
            o.values = normalize(spec.record_type, &o.values).unwrap_or(o.values);
            o
        });
    let plan = plan::plan(&desired, observed.as_ref(), spec.adopt, spec.policy);
    if let Some(Blocked { reason, message }) = &plan.blocked {
        status.values = observed.map(|o| o.values).unwrap_or_default();
        set_conditions(&mut status, generation, &conditions(false, false, true, reason, message));
        return Ok(Err(Outcome {
            status,
            events: vec![EventNote::warning(reason, message.clone())],
            plan,
            requeue: RESYNC,
        }));
    }
    Ok(Ok(Observed {
        status,
        generation,
        zone,
        rtype,
        values,
        observed,
        plan,
    }))
}

/// A record that cannot be written yet (its target has no address) or at all (an invalid value).
fn not_writable(mut status: DnsRecordStatus, generation: Option<i64>, reason: &'static str, message: String) -> DnsOutcome {
    let waiting = reason != "InvalidValue";
    set_conditions(&mut status, generation, &conditions(false, waiting, !waiting, reason, &message));
    let events = if waiting {
        vec![]
    } else {
        vec![EventNote::warning(reason, message)]
    };
    Outcome {
        status,
        plan: DnsPlan::default(),
        events,
        requeue: if waiting { WAIT_TARGET } else { RESYNC },
    }
}

/// What reconciling would write, read-only.
pub async fn plan<D: DnsApi>(dns: &D, obj: DnsObject<'_>) -> Result<DnsOutcome, ReconcileError> {
    let o = match observe(dns, obj).await? {
        Ok(o) => o,
        Err(out) => return Ok(out),
    };
    let mut status = o.status;
    status.values = o.observed.map(|r| r.values).unwrap_or_default();
    Ok(Outcome {
        status,
        plan: o.plan,
        events: vec![],
        requeue: RESYNC,
    })
}

/// One reconcile: read, plan, write what differs, report.
pub async fn reconcile<D: DnsApi>(dns: &D, obj: DnsObject<'_>) -> Result<DnsOutcome, ReconcileError> {
    let o = match observe(dns, obj).await? {
        Ok(o) => o,
        Err(out) => return Ok(out),
    };
    let Observed {
        mut status,
        generation,
        zone,
        rtype,
        values,
        observed,
        plan,
    } = o;
    let mut events = vec![];
    for action in &plan.actions {
        if let DnsAction::Put { set, why } = action {
            dns.put(&zone, set).await.map_err(|e| ReconcileError::Dns {
                step: format!("writing {} {}", set.name, set.rtype),
                source: e,
            })?;
            events.push(EventNote::normal(
                why,
                format!("{} {} {} (TTL {})", set.name, set.rtype, set.values.join(", "), set.ttl),
            ));
        }
    }
    status.values = if plan.actions.is_empty() {
        observed.map(|o| o.values).unwrap_or(values)
    } else {
        values
    };
    let message = format!(
        "{} {rtype} {}",
        status.fqdn.as_deref().unwrap_or_default(),
        status.values.join(", ")
    );
    set_conditions(&mut status, generation, &conditions(true, false, false, "Published", &message));
    Ok(Outcome {
        status,
        plan,
        events,
        requeue: RESYNC,
    })
}

/// Deletion: remove (or release) a record the operator owns; never touch others.
pub async fn cleanup<D: DnsApi>(dns: &D, id: &Identity, spec: &DnsRecordSpec) -> Result<Vec<EventNote>, ReconcileError> {
    let zone = absolute(&spec.zone);
    let name = fqdn(&spec.name, &zone);
    let rtype = spec.record_type.as_str();
    let observed = dns.get(&zone, &name, rtype).await.map_err(|e| ReconcileError::Dns {
        step: format!("reading {name} {rtype}"),
        source: e,
    })?;
    let mut events = vec![];
    for action in plan::plan_delete(observed.as_ref(), &id.mark_line(), spec.policy, spec.deletion_policy) {
        match action {
            DnsAction::Delete => {
                dns.delete(&zone, &name, rtype).await.map_err(|e| ReconcileError::Dns {
                    step: format!("deleting {name} {rtype}"),
                    source: e,
                })?;
                events.push(EventNote::normal("Deleted", format!("{name} {rtype} deleted")));
            }
            DnsAction::ReleaseMark(set) => {
                dns.put(&zone, &set).await.map_err(|e| ReconcileError::Dns {
                    step: format!("releasing {name} {rtype}"),
                    source: e,
                })?;
                events.push(EventNote::normal(
                    "Retained",
                    format!("{name} {rtype} kept; ownership mark removed"),
                ));
            }
            DnsAction::Put { .. } => {}
        }
    }
    if events.is_empty() {
        events.push(EventNote::normal(
            "Released",
            format!("no record of ours at {name} {rtype}; nothing to clean up"),
        ));
    }
    Ok(events)
}
