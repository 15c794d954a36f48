//! DnsRecord as both front ends drive it.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::{DnsObject, Target, cleanup, plan::DnsAction, zones::Listed};
use crate::{
    api::{self, DnsRecord, DnsRecordStatus},
    providers::{UnknownEndpoint, dns::DnsClient},
    reconcile::{
        Change, Cleanup, Env, Outcome, StatusSink,
        kind::{Fut, Kind, Lookup, generation, guest_addresses, namespace, ready_cells, waiting},
        listings,
        ownership::Identity,
    },
};

impl DnsRecord {
    fn object<'a>(&'a self, id: &'a Identity, target: &Target) -> DnsObject<'a> {
        DnsObject {
            id,
            spec: &self.spec,
            status: self.status.clone().unwrap_or_default(),
            generation: generation(self),
            target: target.clone(),
        }
    }
}

impl DnsRecord {
    /// The record's endpoint, read through its zone's shared listing; a new or
    /// changed spec (and a deletion) reads the server itself.
    fn endpoint<'a>(&'a self, env: Env<'a>, fresh: bool) -> Result<Listed<'a, DnsClient>, UnknownEndpoint> {
        let fresh = fresh || self.status.as_ref().and_then(|s| s.observed_generation) != generation(self);
        Ok(Listed {
            dns: env.providers.dns(&self.spec.provider)?,
            zones: &env.cache.zones,
            endpoint: &self.spec.provider,
            max_age: listings::max_age(env.drift.period()),
            fresh,
        })
    }
}

/// Outside state is re-read at least every drift period, as for guests.
fn at_least_every_drift(env: Env<'_>, mut out: super::DnsOutcome) -> super::DnsOutcome {
    out.requeue = out.requeue.min(env.drift.period().max(Duration::from_secs(1)));
    out
}

impl Kind for DnsRecord {
    type Status = DnsRecordStatus;
    type Plan = super::plan::DnsPlan;
    /// The addresses of the guest the record publishes.
    type Inputs = Target;
    const KIND: &'static str = "DnsRecord";
    const FINALIZER: &'static str = api::DNS_FINALIZER;

    fn current_status(&self) -> Option<DnsRecordStatus> {
        self.status.clone()
    }

    fn set_status(&mut self, status: DnsRecordStatus) {
        self.status = Some(status);
    }

    fn conditions_mut(status: &mut DnsRecordStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }

    fn admit(&self) -> Result<(), String> {
        self.validate_cel().map_err(|e| e.to_string())
    }

    fn resolve<'a>(&'a self, _env: Env<'a>, lookup: &'a dyn Lookup) -> Fut<'a, Target> {
        Box::pin(async move {
            let Some(t) = &self.spec.target else { return Ok(Target::NoTarget) };
            Ok(guest_addresses(lookup, namespace(self), &t.name, t.nic.as_deref())
                .await?
                .map_or(Target::Missing, Target::Ips))
        })
    }

    fn plan<'a>(&'a self, env: Env<'a>, target: &'a Target) -> Fut<'a, Outcome<DnsRecordStatus, Self::Plan>> {
        Box::pin(async move {
            let id = Identity::of(self);
            super::plan(&self.endpoint(env, false)?, self.object(&id, target)).await
        })
    }

    fn reconcile<'a>(
        &'a self,
        env: Env<'a>,
        target: Target,
        _sink: &'a dyn StatusSink<DnsRecordStatus>,
    ) -> Fut<'a, Outcome<DnsRecordStatus, Self::Plan>> {
        Box::pin(async move {
            let id = Identity::of(self);
            let out = super::reconcile(&self.endpoint(env, false)?, self.object(&id, &target)).await?;
            Ok(at_least_every_drift(env, out))
        })
    }

    fn cleanup<'a>(&'a self, env: Env<'a>, _sink: &'a dyn StatusSink<DnsRecordStatus>) -> Fut<'a, Cleanup<DnsRecordStatus>> {
        Box::pin(async move {
            let events = cleanup(&self.endpoint(env, true)?, &Identity::of(self), &self.spec).await?;
            Ok(Cleanup::Done(events))
        })
    }

    fn changes(out: &Outcome<DnsRecordStatus, Self::Plan>) -> Vec<Change> {
        let mut changes: Vec<Change> = out.plan.blocked.iter().map(Change::blocked).collect();
        for act in &out.plan.actions {
            if let DnsAction::Put { set, why } = act {
                let what = format!("{why}: {} {} {} (TTL {})", set.name, set.rtype, set.values.join(", "), set.ttl);
                // Adopting as it is writes only the ownership mark.
                let adopt_only = *why == "Adopted" && out.plan.marks_only;
                let symbol = match adopt_only {
                    true => '=',
                    false if out.status.values.is_empty() => '+',
                    false => '~',
                };
                let what = if adopt_only {
                    format!("adopt: add the ownership mark to {what}")
                } else {
                    what
                };
                changes.push(Change::new(symbol, what));
            }
        }
        if changes.is_empty() {
            changes.extend(waiting(&out.status.conditions));
        }
        changes
    }

    fn table_header() -> Vec<&'static str> {
        vec!["NAME", "FQDN", "VALUES", "READY", "MESSAGE"]
    }

    fn table_row(name: &str, s: &DnsRecordStatus, error: Option<&str>) -> Vec<String> {
        let values = if s.values.is_empty() { "-".into() } else { s.values.join(",") };
        let mut row = vec![name.to_string(), s.fqdn.clone().unwrap_or_else(|| "-".into()), values];
        row.extend(ready_cells(&s.conditions, error));
        row
    }
}
