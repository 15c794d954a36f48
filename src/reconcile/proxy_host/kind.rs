//! ProxyHost as both front ends drive it.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::{ProxyObject, ProxyOutcome, cleanup, hosts::Listed, plan::ProxyAction};
use crate::{
    api::{self, ProxyHost, ProxyHostStatus},
    providers::{UnknownEndpoint, npm::Npm},
    reconcile::{
        Change, Cleanup, Env, Outcome, StatusSink,
        kind::{Fut, Kind, Lookup, generation, guest_addresses, namespace, ready_cells, waiting},
        listings,
        ownership::Identity,
    },
};

impl ProxyHost {
    fn object<'a>(&'a self, id: &'a Identity, target_ips: &Option<Vec<String>>) -> ProxyObject<'a> {
        ProxyObject {
            id,
            spec: &self.spec,
            status: self.status.clone().unwrap_or_default(),
            generation: generation(self),
            target_ips: target_ips.clone(),
        }
    }
}

impl ProxyHost {
    /// The host's NPM endpoint, listed through its shared listing; a new or
    /// changed spec (and a deletion) lists the server itself.
    fn endpoint<'a>(&'a self, env: Env<'a>, fresh: bool) -> Result<Listed<'a, Npm>, UnknownEndpoint> {
        let fresh = fresh || self.status.as_ref().and_then(|s| s.observed_generation) != generation(self);
        Ok(Listed {
            api: env.providers.proxy(&self.spec.provider)?,
            hosts: &env.cache.proxy_hosts,
            endpoint: &self.spec.provider,
            max_age: listings::max_age(env.drift.period()),
            fresh,
        })
    }
}

impl Kind for ProxyHost {
    type Status = ProxyHostStatus;
    type Plan = super::plan::ProxyPlan;
    /// The addresses of the guest the host forwards to (`None` while it does not exist, or without a target).
    type Inputs = Option<Vec<String>>;
    const KIND: &'static str = "ProxyHost";
    const FINALIZER: &'static str = api::PROXY_FINALIZER;

    fn current_status(&self) -> Option<ProxyHostStatus> {
        self.status.clone()
    }

    fn set_status(&mut self, status: ProxyHostStatus) {
        self.status = Some(status);
    }

    fn conditions_mut(status: &mut ProxyHostStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }

    fn admit(&self) -> Result<(), String> {
        self.validate_cel().map_err(|e| e.to_string())
    }

    fn resolve<'a>(&'a self, _env: Env<'a>, lookup: &'a dyn Lookup) -> Fut<'a, Option<Vec<String>>> {
        Box::pin(async move {
            let Some(t) = &self.spec.target else { return Ok(None) };
            guest_addresses(lookup, namespace(self), &t.name, t.nic.as_deref()).await
        })
    }

    fn plan<'a>(&'a self, env: Env<'a>, ips: &'a Option<Vec<String>>) -> Fut<'a, ProxyOutcome> {
        Box::pin(async move {
            let id = Identity::of(self);
            super::plan(&self.endpoint(env, false)?, self.object(&id, ips)).await
        })
    }

    fn reconcile<'a>(
        &'a self,
        env: Env<'a>,
        ips: Option<Vec<String>>,
        _sink: &'a dyn StatusSink<ProxyHostStatus>,
    ) -> Fut<'a, ProxyOutcome> {
        Box::pin(async move {
            let id = Identity::of(self);
            let mut out = super::reconcile(&self.endpoint(env, false)?, self.object(&id, &ips)).await?;
            // Outside state is re-read at least every drift period, as for guests.
            out.requeue = out.requeue.min(env.drift.period().max(Duration::from_secs(1)));
            Ok(out)
        })
    }

    fn cleanup<'a>(&'a self, env: Env<'a>, _sink: &'a dyn StatusSink<ProxyHostStatus>) -> Fut<'a, Cleanup<ProxyHostStatus>> {
        Box::pin(async move {
            let events = cleanup(&self.endpoint(env, true)?, &Identity::of(self), &self.spec).await?;
            Ok(Cleanup::Done(events))
        })
    }

    fn changes(out: &Outcome<ProxyHostStatus, Self::Plan>) -> Vec<Change> {
        let mut changes: Vec<Change> = out.plan.blocked.iter().map(Change::blocked).collect();
        for act in &out.plan.actions {
            let (symbol, h, why) = match act {
                ProxyAction::Create(h) => ('+', h, "create proxy host".to_string()),
                // Adopting as it is writes only the ownership mark.
                ProxyAction::Update { id, spec, why: "Adopted" } => {
                    ('=', spec, format!("adopt: add the ownership mark to proxy host {id}"))
                }
                ProxyAction::Update { id, spec, why } => ('~', spec, format!("{why}: proxy host {id}")),
            };
            let what = format!(
                "{why} {} → {}://{}:{}",
                h.domain_names.join(", "),
                h.forward_scheme,
                h.forward_host,
                h.forward_port
            );
            changes.push(Change::new(symbol, what));
        }
        if changes.is_empty() {
            changes.extend(waiting(&out.status.conditions));
        }
        changes
    }

    fn table_header() -> Vec<&'static str> {
        vec!["NAME", "UPSTREAM", "TLS", "READY", "MESSAGE"]
    }

    fn table_row(name: &str, s: &ProxyHostStatus, error: Option<&str>) -> Vec<String> {
        let mut row = vec![
            name.to_string(),
            s.upstream.clone().unwrap_or_else(|| "-".into()),
            s.tls.clone().unwrap_or_else(|| "-".into()),
        ];
        row.extend(ready_cells(&s.conditions, error));
        row
    }
}
