//! Reconcile resources without a cluster: the engine of `plan`, `apply` and `demo`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    api::{self, ProxmoxGuest, ProxmoxGuestStatus},
    config::Config,
    metrics::Metrics,
    providers::{Providers, pve::PveClient},
    reconcile::{
        Env, ReconcileError, StatusSink,
        cache::{ClusterCache, DriftClock},
        ownership::Identity,
        proxmox_guest::{self, GuestCtx, GuestObject, Plan},
    },
};

/// Status kept in memory (a one-shot run has no apiserver).
#[derive(Default)]
pub struct MemoryStatus<S = ProxmoxGuestStatus>(pub Mutex<S>);

impl<S: Clone + Send + Sync> StatusSink<S> for MemoryStatus<S> {
    fn save<'a>(&'a self, status: &'a S) -> futures::future::BoxFuture<'a, Result<(), String>> {
        *self.0.lock().unwrap() = status.clone();
        Box::pin(async { Ok(()) })
    }
}

pub struct Engine {
    /// The outside systems' clients and the notifier, built once from the config.
    pub providers: Providers,
    pub cache: ClusterCache,
    pub drift: DriftClock,
    pub metrics: Arc<Metrics>,
}

impl Engine {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        Ok(Self {
            providers: Providers::from_config(config, Some(metrics.clone())).map_err(anyhow::Error::msg)?,
            cache: ClusterCache::new(Duration::from_secs(10)),
            drift: DriftClock::new(Duration::from_secs(600)),
            metrics,
        })
    }

    /// What the shared reconcilers read from.
    pub fn env(&self) -> Env<'_> {
        Env {
            providers: &self.providers,
            cache: &self.cache,
            drift: &self.drift,
        }
    }

    pub fn ctx<'a>(&'a self, cluster: &'a str, dry_run: bool) -> Result<GuestCtx<'a, PveClient>, ReconcileError> {
        Ok(GuestCtx {
            api: self.providers.pve(cluster)?,
            cache: &self.cache,
            drift: &self.drift,
            cluster,
            dry_run,
            on_takedown: None,
        })
    }
}

pub fn identity(g: &ProxmoxGuest) -> Identity {
    Identity::new(
        g.metadata.namespace.as_deref().unwrap_or("default"),
        g.metadata.name.as_deref().unwrap_or(""),
        g.metadata.uid.as_deref(),
    )
}

pub fn display_name(g: &ProxmoxGuest) -> String {
    format!(
        "{}/{}",
        g.metadata.namespace.as_deref().unwrap_or("default"),
        g.metadata.name.as_deref().unwrap_or("")
    )
}

/// Check a guest as the apiserver would (CEL rules) before touching anything.
pub fn admit(g: &ProxmoxGuest) -> Result<(), String> {
    g.validate_cel().map_err(|e| e.to_string())
}

/// What `plan` reports for one guest.
pub async fn plan_one(engine: &Engine, g: &ProxmoxGuest) -> Result<Plan, ReconcileError> {
    admit(g).map_err(ReconcileError::Config)?;
    let ctx = engine.ctx(&g.spec.cluster, true)?;
    let id = identity(g);
    let sink = MemoryStatus::default();
    let spec = g.effective_spec();
    let obj = GuestObject {
        id: &id,
        spec: &spec,
        status: g.status.clone().unwrap_or_default(),
        generation: Some(1),
        ci_password: None,
    };
    proxmox_guest::reconcile(&ctx, obj, &sink).await.map(|o| o.plan)
}

/// The final word on one guest after `apply`.
pub struct Applied<S = ProxmoxGuestStatus> {
    pub name: String,
    pub status: S,
    pub error: Option<String>,
}

/// Print a one-shot reconcile's events and turn its result into an `Applied`;
/// on error the status stays what it was.
fn finish<S>(
    name: String,
    result: Result<(S, Vec<crate::reconcile::EventNote>), ReconcileError>,
    old: S,
    progress: &(dyn Fn(&str) + Sync),
) -> Applied<S> {
    match result {
        Ok((status, events)) => {
            for e in &events {
                progress(&format!("{name}: {}{}", if e.warning { "warning: " } else { "" }, e.note));
            }
            Applied { name, status, error: None }
        }
        Err(e) => Applied {
            name,
            status: old,
            error: Some(e.to_string()),
        },
    }
}

/// Reconcile one guest until it is Ready, Stalled, fails, or `deadline` passes.
pub async fn apply_one(engine: &Engine, g: &ProxmoxGuest, deadline: Duration, progress: &(dyn Fn(&str) + Sync)) -> Applied {
    apply_scheduled(engine, g, deadline, progress, &tokio::sync::Semaphore::new(1)).await
}

/// Reconcile `g` until it settles, holding one of `workers` only while a
/// reconcile runs (never while waiting for a task or a requeue), exactly as a
/// controller worker is held: many guests progress while their tasks run.
async fn apply_scheduled(
    engine: &Engine,
    g: &ProxmoxGuest,
    deadline: Duration,
    progress: &(dyn Fn(&str) + Sync),
    workers: &tokio::sync::Semaphore,
) -> Applied {
    let name = display_name(g);
    if let Err(e) = admit(g) {
        return Applied {
            name,
            status: ProxmoxGuestStatus::default(),
            error: Some(format!("invalid spec: {e}")),
        };
    }
    let ctx = match engine.ctx(&g.spec.cluster, false) {
        Ok(c) => c,
        Err(e) => {
            return Applied {
                name,
                status: ProxmoxGuestStatus::default(),
                error: Some(e.to_string()),
            };
        }
    };
    let id = identity(g);
    let sink = MemoryStatus::default();
    *sink.0.lock().unwrap() = g.status.clone().unwrap_or_default();
    let started = Instant::now();
    let mut failures = 0u32;
    let spec = g.effective_spec();
    loop {
        let status = sink.0.lock().unwrap().clone();
        let obj = GuestObject {
            id: &id,
            spec: &spec,
            status,
            generation: Some(1),
            ci_password: None,
        };
        let result = {
            let _worker = workers.acquire().await.expect("semaphore open");
            proxmox_guest::reconcile(&ctx, obj, &sink).await
        };
        match result {
            Ok(out) => {
                failures = 0;
                for e in &out.events {
                    progress(&format!("{name}: {}{}", if e.warning { "warning: " } else { "" }, e.note));
                }
                let ready = api::find_condition(&out.status.conditions, api::CONDITION_READY).is_some_and(|c| c.status == "True");
                // Its DNS record or proxy host needs the address the agent has not reported yet.
                let publishes = spec.dns.is_some() || spec.proxy.is_some();
                let awaiting_address = publishes && out.status.state.as_deref() == Some("running") && out.status.ips.is_empty();
                if ready && awaiting_address && started.elapsed() < deadline {
                    *sink.0.lock().unwrap() = out.status.clone();
                    tokio::time::sleep(out.requeue.min(Duration::from_secs(10))).await;
                    continue;
                }
                let stalled = api::find_condition(&out.status.conditions, api::CONDITION_STALLED).is_some_and(|c| c.status == "True");
                let settled = out.plan.actions.is_empty() && out.status.current_task.is_none() && out.requeue > Duration::from_secs(5);
                *sink.0.lock().unwrap() = out.status.clone();
                if ready || stalled || settled {
                    return Applied {
                        name,
                        status: out.status,
                        error: None,
                    };
                }
                tokio::time::sleep(out.requeue.min(Duration::from_millis(250))).await;
            }
            Err(e) if e.is_transient() && failures < 5 => {
                failures += 1;
                progress(&format!("{name}: retrying after: {e}"));
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(failures))).await;
            }
            Err(e) => {
                return Applied {
                    name,
                    status: sink.0.lock().unwrap().clone(),
                    error: Some(e.to_string()),
                };
            }
        }
        if started.elapsed() > deadline {
            return Applied {
                name,
                status: sink.0.lock().unwrap().clone(),
                error: Some(format!("not settled after {deadline:?}")),
            };
        }
    }
}

/// Apply many guests with at most `concurrency` reconciles running at once
/// (the controller's `--concurrency`), in input order for the report.
pub async fn apply_all(
    engine: &Engine,
    guests: &[ProxmoxGuest],
    concurrency: usize,
    deadline: Duration,
    progress: &(dyn Fn(&str) + Sync),
) -> Vec<Applied> {
    let workers = tokio::sync::Semaphore::new(concurrency.max(1));
    futures::future::join_all(guests.iter().map(|g| apply_scheduled(engine, g, deadline, progress, &workers))).await
}

/// A fixed-width table of results, as `kubectl get` would show them.
pub fn status_table(results: &[Applied]) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "VMID".into(),
        "NODE".into(),
        "STATE".into(),
        "IP".into(),
        "READY".into(),
        "MESSAGE".into(),
    ]];
    for r in results {
        let ready = api::find_condition(&r.status.conditions, api::CONDITION_READY);
        rows.push([
            r.name.clone(),
            r.status.vmid.map_or("-".into(), |v| v.to_string()),
            r.status.node.clone().unwrap_or_else(|| "-".into()),
            r.status.state.clone().unwrap_or_else(|| "-".into()),
            r.status.ips.first().cloned().unwrap_or_else(|| "-".into()),
            ready.map_or("Unknown".into(), |c| c.status.clone()),
            r.error
                .clone()
                .unwrap_or_else(|| ready.map_or(String::new(), |c| c.message.clone())),
        ]);
    }
    render_table(&rows)
}

/// What `apply`/`plan` know of the guests (their NICs' addresses), by `namespace/name`.
pub type GuestAddresses = BTreeMap<String, ProxmoxGuestStatus>;

pub fn guest_addresses<'a>(guests: impl IntoIterator<Item = (String, &'a ProxmoxGuestStatus)>) -> GuestAddresses {
    guests.into_iter().map(|(name, s)| (name, s.clone())).collect()
}

pub fn record_name(r: &api::DnsRecord) -> String {
    format!(
        "{}/{}",
        r.metadata.namespace.as_deref().unwrap_or("default"),
        r.metadata.name.as_deref().unwrap_or("")
    )
}

fn record_parts<'a>(
    engine: &'a Engine,
    r: &api::DnsRecord,
    guests: &GuestAddresses,
) -> Result<(&'a crate::providers::dns::DnsClient, Identity, crate::reconcile::dns_record::Target), ReconcileError> {
    use crate::reconcile::dns_record::Target;
    r.validate_cel().map_err(|e| ReconcileError::Config(format!("invalid spec: {e}")))?;
    let dns = engine.providers.dns(&r.spec.provider)?;
    let ns = r.metadata.namespace.as_deref().unwrap_or("default");
    let id = Identity::new(ns, r.metadata.name.as_deref().unwrap_or(""), r.metadata.uid.as_deref());
    let target = match &r.spec.target {
        None => Target::NoTarget,
        Some(t) => guests
            .get(&format!("{ns}/{}", t.name))
            .map_or(Target::Missing, |s| Target::Ips(s.addresses(t.nic.as_deref()))),
    };
    Ok((dns, id, target))
}

/// What `plan` reports for one record.
pub async fn plan_record(
    engine: &Engine,
    r: &api::DnsRecord,
    guests: &GuestAddresses,
) -> Result<crate::reconcile::dns_record::DnsOutcome, ReconcileError> {
    let (dns, id, target) = record_parts(engine, r, guests)?;
    let obj = crate::reconcile::dns_record::DnsObject {
        id: &id,
        spec: &r.spec,
        status: r.status.clone().unwrap_or_default(),
        generation: Some(1),
        target,
    };
    crate::reconcile::dns_record::reconcile(dns, obj, true).await
}

/// The final word on one record after `apply`.
pub type RecordApplied = Applied<api::DnsRecordStatus>;

pub async fn apply_record(engine: &Engine, r: &api::DnsRecord, guests: &GuestAddresses, progress: &(dyn Fn(&str) + Sync)) -> RecordApplied {
    let result = async {
        let (dns, id, target) = record_parts(engine, r, guests)?;
        let obj = crate::reconcile::dns_record::DnsObject {
            id: &id,
            spec: &r.spec,
            status: r.status.clone().unwrap_or_default(),
            generation: Some(1),
            target,
        };
        crate::reconcile::dns_record::reconcile(dns, obj, false)
            .await
            .map(|o| (o.status, o.events))
    }
    .await;
    finish(record_name(r), result, r.status.clone().unwrap_or_default(), progress)
}

/// Delete (or release) one record as deleting the resource would.
pub async fn delete_record(engine: &Engine, r: &api::DnsRecord) -> Result<Vec<crate::reconcile::EventNote>, ReconcileError> {
    let (dns, id, _) = record_parts(engine, r, &GuestAddresses::new())?;
    crate::reconcile::dns_record::cleanup(dns, &id, &r.spec).await
}

pub fn record_table(results: &[RecordApplied]) -> String {
    let mut rows = vec![["NAME".to_string(), "FQDN".into(), "VALUES".into(), "READY".into(), "MESSAGE".into()]];
    for r in results {
        let ready = api::find_condition(&r.status.conditions, api::CONDITION_READY);
        rows.push([
            r.name.clone(),
            r.status.fqdn.clone().unwrap_or_else(|| "-".into()),
            if r.status.values.is_empty() {
                "-".into()
            } else {
                r.status.values.join(",")
            },
            ready.map_or("Unknown".into(), |c| c.status.clone()),
            r.error
                .clone()
                .unwrap_or_else(|| ready.map_or(String::new(), |c| c.message.clone())),
        ]);
    }
    render_table(&rows)
}

/// The DnsRecords in the files plus those guests ask for in `spec.dns`
/// (what the controller would create as owned children).
pub fn all_records(guests: &[ProxmoxGuest], records: &[api::DnsRecord]) -> Vec<api::DnsRecord> {
    let mut out = records.to_vec();
    out.extend(guests.iter().flat_map(crate::reconcile::proxmox_guest::children::dns_records));
    out
}

fn proxy_parts<'a>(
    engine: &'a Engine,
    p: &api::ProxyHost,
    guests: &GuestAddresses,
) -> Result<(&'a crate::providers::npm::Npm, Identity, Option<Vec<String>>), ReconcileError> {
    p.validate_cel().map_err(|e| ReconcileError::Config(format!("invalid spec: {e}")))?;
    let client = engine.providers.proxy(&p.spec.provider)?;
    let ns = p.metadata.namespace.as_deref().unwrap_or("default");
    let id = Identity::new(ns, p.metadata.name.as_deref().unwrap_or(""), p.metadata.uid.as_deref());
    let ips = p
        .spec
        .target
        .as_ref()
        .and_then(|t| Some(guests.get(&format!("{ns}/{}", t.name))?.addresses(t.nic.as_deref())));
    Ok((client, id, ips))
}

fn proxy_object<'a>(p: &'a api::ProxyHost, id: &'a Identity, ips: Option<Vec<String>>) -> crate::reconcile::proxy_host::ProxyObject<'a> {
    crate::reconcile::proxy_host::ProxyObject {
        id,
        spec: &p.spec,
        status: p.status.clone().unwrap_or_default(),
        generation: Some(1),
        target_ips: ips,
    }
}

pub fn proxy_name(p: &api::ProxyHost) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

pub async fn plan_proxy(
    engine: &Engine,
    p: &api::ProxyHost,
    guests: &GuestAddresses,
) -> Result<crate::reconcile::proxy_host::ProxyOutcome, ReconcileError> {
    let (client, id, ips) = proxy_parts(engine, p, guests)?;
    crate::reconcile::proxy_host::reconcile(client, proxy_object(p, &id, ips), true).await
}

pub type ProxyApplied = Applied<api::ProxyHostStatus>;

pub async fn apply_proxy(engine: &Engine, p: &api::ProxyHost, guests: &GuestAddresses, progress: &(dyn Fn(&str) + Sync)) -> ProxyApplied {
    let result = async {
        let (client, id, ips) = proxy_parts(engine, p, guests)?;
        crate::reconcile::proxy_host::reconcile(client, proxy_object(p, &id, ips), false)
            .await
            .map(|o| (o.status, o.events))
    }
    .await;
    finish(proxy_name(p), result, p.status.clone().unwrap_or_default(), progress)
}

pub async fn delete_proxy(engine: &Engine, p: &api::ProxyHost) -> Result<Vec<crate::reconcile::EventNote>, ReconcileError> {
    let (client, id, _) = proxy_parts(engine, p, &GuestAddresses::new())?;
    crate::reconcile::proxy_host::cleanup(client, &id, &p.spec).await
}

pub fn proxy_table(results: &[ProxyApplied]) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "UPSTREAM".into(),
        "TLS".into(),
        "READY".into(),
        "MESSAGE".into(),
    ]];
    for r in results {
        let ready = api::find_condition(&r.status.conditions, api::CONDITION_READY);
        rows.push([
            r.name.clone(),
            r.status.upstream.clone().unwrap_or_else(|| "-".into()),
            r.status.tls.clone().unwrap_or_else(|| "-".into()),
            ready.map_or("Unknown".into(), |c| c.status.clone()),
            r.error
                .clone()
                .unwrap_or_else(|| ready.map_or(String::new(), |c| c.message.clone())),
        ]);
    }
    render_table(&rows)
}

/// The MonitorTargets in the files plus those guests ask for in `spec.monitor`.
pub fn all_monitors(guests: &[ProxmoxGuest], monitors: &[api::MonitorTarget]) -> Vec<api::MonitorTarget> {
    let mut out = monitors.to_vec();
    out.extend(guests.iter().flat_map(crate::reconcile::proxmox_guest::children::monitors));
    out
}

/// The ProxyHosts in the files plus those guests ask for in `spec.proxy`.
pub fn all_proxies(guests: &[ProxmoxGuest], proxies: &[api::ProxyHost]) -> Vec<api::ProxyHost> {
    let mut out = proxies.to_vec();
    out.extend(guests.iter().flat_map(crate::reconcile::proxmox_guest::children::proxy_hosts));
    out
}

/// Columns padded to their widest cell; the last (message) column is left ragged.
pub fn render_table<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| if i + 1 == N { c.clone() } else { format!("{c:<w$}", w = widths[i]) })
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
