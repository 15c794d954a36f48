//! MonitorTarget controller glue: resolve the target and the Secrets the
//! check needs, hand the monitor to the scheduler (which runs its checks and
//! owns its status), and take it away on deletion.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    core::DeserializeGuard,
    runtime::{controller::Action, reflector::Store},
};

use super::{
    context::Context,
    shared::{Error, StatusWriter, error_policy as shared_error_policy, guest_addresses, reconcile_kind, targeting},
};
use crate::{
    api::{MonitorTarget, ProxmoxGuest, ProxyHost},
    monitor::{probe, scheduler::Key},
    reconcile::ReconcileError,
};

pub async fn reconcile(obj: Arc<DeserializeGuard<MonitorTarget>>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile_kind(obj, ctx, |m, c, w| Box::pin(apply(m, c, w)), |m, c, _| Box::pin(cleanup(m, c))).await
}

fn key(m: &MonitorTarget) -> Key {
    (m.namespace().unwrap_or_default(), m.name_any())
}

async fn apply(m: &MonitorTarget, ctx: &Context, writer: &StatusWriter<MonitorTarget>) -> Result<Action, Error> {
    let built = resolve(m, ctx).await;
    let config = match built {
        Ok(c) => c,
        Err(e) => {
            // The scheduler must not overwrite the error the driver reports.
            ctx.monitors.remove(&key(m));
            return Err(e);
        }
    };
    // The scheduler owns this status from here on, through a writer of its own.
    let sink = Arc::new(StatusWriter::new(writer.api().clone(), m.name_any(), m.status.as_ref()));
    ctx.monitors
        .upsert(key(m), config, &m.status.clone().unwrap_or_default(), sink)
        .await;
    // A target's address may change without an event we watch (a ProxyHost's domains): look again now and then.
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn resolve(m: &MonitorTarget, ctx: &Context) -> Result<crate::monitor::scheduler::MonitorConfig, Error> {
    if let Some(unknown) = m
        .spec
        .policy
        .notify
        .iter()
        .flat_map(|n| &n.channels)
        .find(|c| !ctx.providers.notifier.has(c))
    {
        return Err(ReconcileError::Config(format!(
            "spec.notify.channels: {unknown:?} is not in the config's notifications: section"
        ))
        .into());
    }
    let ns = m.namespace().unwrap_or_default();
    let host = match &m.spec.target {
        None => None,
        Some(t) if t.kind == "ProxyHost" => {
            let hosts: Api<ProxyHost> = Api::namespaced(ctx.client.clone(), &ns);
            let h = hosts.get_opt(&t.name).await.map_err(Error::Kube)?;
            let domain = h.and_then(|h| h.spec.domains.first().cloned());
            Some(domain.ok_or_else(|| ReconcileError::Config(format!("target ProxyHost {} does not exist or has no domain", t.name)))?)
        }
        Some(t) => {
            let ips = guest_addresses(ctx, &ns, &t.name, t.nic.as_deref()).await?;
            let first = ips.and_then(|a| a.into_iter().next());
            // Not an error a person must fix: the guest may still be booting.
            Some(first.ok_or_else(|| ReconcileError::Config(format!("target ProxmoxGuest {} has no address yet", t.name)))?)
        }
    };
    let secrets = read_secrets(ctx, &ns, &probe::secret_refs(&m.spec)).await?;
    probe::build(&m.spec, host.as_deref(), &secrets, m.metadata.generation).map_err(|e| ReconcileError::Config(e).into())
}

async fn read_secrets(ctx: &Context, ns: &str, refs: &[crate::api::SecretKeyRef]) -> Result<probe::Secrets, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let mut out = BTreeMap::new();
    for r in refs {
        let s = api.get_opt(&r.name).await.map_err(Error::Kube)?;
        let value = s
            .and_then(|s| s.data)
            .and_then(|d| d.get(&r.key).cloned())
            .map(|b| String::from_utf8_lossy(&b.0).into_owned());
        if let Some(v) = value {
            out.insert((r.name.clone(), r.key.clone()), v);
        }
    }
    Ok(out)
}

async fn cleanup(m: &MonitorTarget, ctx: &Context) -> Result<Action, Error> {
    ctx.monitors.remove(&key(m));
    Ok(Action::await_change())
}

pub fn error_policy(obj: Arc<DeserializeGuard<MonitorTarget>>, err: &Error, ctx: Arc<Context>) -> Action {
    shared_error_policy(obj.0.as_ref().ok().and_then(|m| m.uid()), err, &ctx)
}

/// The monitors whose target is `guest` (its address changed).
pub fn monitors_targeting(
    store: &Store<DeserializeGuard<MonitorTarget>>,
    guest: &ProxmoxGuest,
) -> Vec<kube::runtime::reflector::ObjectRef<DeserializeGuard<MonitorTarget>>> {
    targeting(store, guest, |m: &MonitorTarget| {
        m.spec.target.as_ref().filter(|t| t.kind == "ProxmoxGuest").map(|t| t.name.as_str())
    })
}

/// What a guest reads of its child monitor: spec, Ready, and the Healthy verdict
/// (not the once-a-minute latency and uptime).
pub fn verdict_key(m: &MonitorTarget) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.metadata.generation.hash(&mut h);
    m.metadata.deletion_timestamp.is_some().hash(&mut h);
    let conditions = m.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    for (t, with_message) in [(crate::api::CONDITION_READY, true), (crate::api::CONDITION_HEALTHY, false)] {
        if let Some(c) = crate::api::find_condition(conditions, t) {
            (&c.status, &c.reason, with_message.then_some(&c.message)).hash(&mut h);
        }
    }
    h.finish()
}
