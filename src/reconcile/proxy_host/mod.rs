//! ProxyHost: list the hosts, plan, write, verify nginx took it, report.

pub mod exported;
pub mod hosts;
mod kind;
pub mod plan;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Blocked, EventNote, Outcome, RESYNC, ReconcileError, conditions, ownership::Identity};
use crate::{
    api::{self, ConditionState, ProxyHostSpec, ProxyHostStatus},
    providers::npm::{ProxyApi, ProxyHost},
};
use plan::{ProxyAction, ProxyPlan};

pub struct ProxyObject<'a> {
    pub id: &'a Identity,
    pub spec: &'a ProxyHostSpec,
    pub status: ProxyHostStatus,
    pub generation: Option<i64>,
    /// `status.ips` of the target guest; `None` when it does not exist (or there is no target).
    pub target_ips: Option<Vec<String>>,
}

pub type ProxyOutcome = Outcome<ProxyHostStatus, ProxyPlan>;

fn set(status: &mut ProxyHostStatus, generation: Option<i64>, wanted: &[ConditionState]) {
    status.conditions = api::merge_conditions(&status.conditions, wanted, generation, Time(jiff::Timestamp::now()));
}

fn proxy_err(step: String, source: crate::providers::npm::Error) -> ReconcileError {
    ReconcileError::Proxy { step, source }
}

/// (scheme, host, port) from `forward`, or from the target guest's first address (IPv4 first).
fn upstream(spec: &ProxyHostSpec, ips: Option<&Vec<String>>) -> Result<(String, String, u16), (&'static str, String)> {
    if let Some(f) = &spec.forward {
        return Ok((f.scheme.as_str().into(), f.host.clone(), f.port));
    }
    let t = spec.target.as_ref().expect("admission: forward or target");
    let Some(ips) = ips else {
        return Err(("TargetNotFound", format!("waiting for ProxmoxGuest {:?} in this namespace", t.name)));
    };
    let pick = ips.iter().find(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()).or(ips.first());
    match pick {
        Some(ip) => Ok((t.scheme.as_str().into(), ip.clone(), t.port)),
        None => Err((
            "TargetHasNoAddress",
            format!("waiting for ProxmoxGuest {:?} to report an address", t.name),
        )),
    }
}

fn describe_tls(h: &ProxyHost) -> String {
    match h.certificate_id.as_u64() {
        Some(0) | None => "none".into(),
        Some(id) => format!("certificate {id}{}", if h.ssl_forced { ", forced" } else { "" }),
    }
}

fn observe_host(status: &mut ProxyHostStatus, h: &ProxyHost) {
    let (online, err) = h.nginx();
    status.host_id = Some(h.id);
    status.upstream = Some(format!("{}://{}:{}", h.forward_scheme, h.forward_host, h.forward_port));
    status.tls = Some(describe_tls(h));
    status.nginx_online = Some(online);
    status.nginx_error = err;
}

/// The hosts observed and planned.
struct Observed {
    status: ProxyHostStatus,
    generation: Option<i64>,
    upstream: String,
    plan: ProxyPlan,
}

/// List the hosts and plan; `Err` carries the outcome when the reconcile ends
/// here (waiting for the target, a conflict).
async fn observe<P: ProxyApi>(api: &P, obj: ProxyObject<'_>) -> Result<Result<Observed, ProxyOutcome>, ReconcileError> {
    let ProxyObject {
        id,
        spec,
        mut status,
        generation,
        target_ips,
    } = obj;
    status.observed_generation = generation;
    let (scheme, host, port) = match upstream(spec, target_ips.as_ref()) {
        Ok(u) => u,
        Err((reason, message)) => {
            set(&mut status, generation, &conditions(false, true, false, reason, &message));
            return Ok(Err(Outcome {
                status,
                plan: ProxyPlan::default(),
                events: vec![],
                requeue: std::time::Duration::from_secs(30),
            }));
        }
    };
    let want = plan::desired(spec, (&scheme, &host, port), &id.mark_line());
    let hosts = api.list().await.map_err(|e| proxy_err("listing proxy hosts".into(), e))?;
    let plan = plan::plan(&want, &hosts, &id.mark_line(), spec.adopt);
    if let Some(h) = plan.current.and_then(|c| hosts.iter().find(|h| h.id == c)) {
        observe_host(&mut status, h);
    }
    if let Some(Blocked { reason, message }) = &plan.blocked {
        set(&mut status, generation, &conditions(false, false, true, reason, message));
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
        upstream: format!("{scheme}://{host}:{port}"),
        plan,
    }))
}

/// What reconciling would write, read-only.
pub async fn plan<P: ProxyApi>(api: &P, obj: ProxyObject<'_>) -> Result<ProxyOutcome, ReconcileError> {
    Ok(match observe(api, obj).await? {
        Ok(o) => Outcome {
            status: o.status,
            plan: o.plan,
            events: vec![],
            requeue: RESYNC,
        },
        Err(out) => out,
    })
}

/// One reconcile: list, plan, write what differs, check nginx took it, report.
pub async fn reconcile<P: ProxyApi>(api: &P, obj: ProxyObject<'_>) -> Result<ProxyOutcome, ReconcileError> {
    let domains = obj.spec.domains.join(", ");
    let Observed {
        mut status,
        generation,
        upstream,
        plan,
    } = match observe(api, obj).await? {
        Ok(o) => o,
        Err(out) => return Ok(out),
    };
    let mut events = vec![];
    let mut written = None;
    for action in &plan.actions {
        let (h, why) = match action {
            ProxyAction::Create(s) => (
                api.create(s)
                    .await
                    .map_err(|e| proxy_err(format!("creating proxy host {domains}"), e))?,
                "Created",
            ),
            ProxyAction::Update { id, spec: s, why } => (
                api.update(*id, s)
                    .await
                    .map_err(|e| proxy_err(format!("updating proxy host {id}"), e))?,
                *why,
            ),
        };
        events.push(EventNote::normal(why, format!("proxy host {} for {domains} → {upstream}", h.id)));
        written = Some(h);
    }
    if let Some(h) = &written {
        observe_host(&mut status, h);
    }
    // NPM reloads nginx after each write; a config nginx refused is for a person to fix.
    let (ready, reason, message) = match status.nginx_online {
        Some(false) => (
            false,
            "NginxRejected",
            format!(
                "nginx did not accept the configuration: {}",
                status.nginx_error.clone().unwrap_or_default()
            ),
        ),
        _ => (true, "Published", format!("{domains} → {upstream}")),
    };
    set(&mut status, generation, &conditions(ready, false, !ready, reason, &message));
    if !ready {
        events.push(EventNote::warning(reason, message));
    }
    Ok(Outcome {
        status,
        plan,
        events,
        requeue: RESYNC,
    })
}

/// Deletion: delete (or release) our host; never touch others.
pub async fn cleanup<P: ProxyApi>(api: &P, id: &Identity, spec: &ProxyHostSpec) -> Result<Vec<EventNote>, ReconcileError> {
    let hosts = api.list().await.map_err(|e| proxy_err("listing proxy hosts".into(), e))?;
    let Some(ours) = hosts.iter().find(|h| h.mark() == Some(id.mark_line().as_str())) else {
        return Ok(vec![EventNote::normal("Released", "no proxy host of ours; nothing to clean up")]);
    };
    match spec.deletion_policy {
        api::DeletionPolicy::Delete => {
            api.delete(ours.id)
                .await
                .map_err(|e| proxy_err(format!("deleting proxy host {}", ours.id), e))?;
            Ok(vec![EventNote::normal("Deleted", format!("proxy host {} deleted", ours.id))])
        }
        api::DeletionPolicy::Retain => {
            let mut keep = plan::desired(spec, (&ours.forward_scheme, &ours.forward_host, ours.forward_port), "");
            keep.certificate_id = ours.certificate_id.clone();
            let mut meta = ours.meta.clone();
            if let Some(m) = meta.as_object_mut() {
                m.remove(crate::providers::npm::META_MARK);
                m.remove("nginx_online");
                m.remove("nginx_err");
            }
            keep.meta = meta;
            api.update(ours.id, &keep)
                .await
                .map_err(|e| proxy_err(format!("releasing proxy host {}", ours.id), e))?;
            Ok(vec![EventNote::normal(
                "Retained",
                format!("proxy host {} kept; ownership mark removed", ours.id),
            )])
        }
    }
}
