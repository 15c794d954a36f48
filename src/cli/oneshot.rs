//! Reconcile resources without a cluster: the engine of `plan`, `apply` and
//! `demo`. It drives every kind through the same [`Kind`] contract as the
//! controller, with the files read standing in for the API server.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;

use crate::{
    api::{MonitorTarget, ProxmoxGuest, ProxmoxGuestStatus, ProxyHost, SecretKeyRef},
    config::Config,
    metrics::Metrics,
    providers::Providers,
    reconcile::{
        Cleanup, Env, EventNote, Outcome, ReconcileError,
        cache::{ClusterCache, DriftClock},
        kind::{Kind, Lookup, Pass, SecretValue, display_name},
    },
};

pub use crate::status::MemoryStatus;

pub struct Engine {
    /// The outside systems' clients and the notifier, built once from the config.
    pub providers: Providers,
    pub cache: ClusterCache,
    pub drift: DriftClock,
    pub metrics: Arc<Metrics>,
}

/// The final word on one resource after `apply`.
pub struct Applied<S = ProxmoxGuestStatus> {
    pub name: String,
    pub status: S,
    pub error: Option<String>,
}

/// What `apply`/`plan` know of the guests (their status, with addresses), by `namespace/name`.
pub type GuestAddresses = BTreeMap<String, ProxmoxGuestStatus>;

/// The resources of the files, as a one-shot run resolves references: each
/// guest with the status the files or `apply` gave it, the proxy hosts. It
/// reads no Secrets.
#[derive(Default)]
pub struct Files {
    guests: Mutex<BTreeMap<String, ProxmoxGuest>>,
    proxies: Vec<ProxyHost>,
    monitors: Vec<MonitorTarget>,
}

impl Files {
    pub fn new(guests: &[ProxmoxGuest], proxies: &[ProxyHost]) -> Self {
        Self {
            guests: Mutex::new(guests.iter().map(|g| (display_name(g), g.clone())).collect()),
            proxies: proxies.to_vec(),
            monitors: vec![],
        }
    }

    /// The MonitorTargets of the files (guests' own included).
    pub fn with_monitors(mut self, monitors: Vec<MonitorTarget>) -> Self {
        self.monitors = monitors;
        self
    }

    /// Guests known only by their status (`namespace/name` → status).
    pub fn with_statuses(statuses: &GuestAddresses) -> Self {
        let guests = statuses.iter().map(|(name, s)| {
            let (ns, name) = name.split_once('/').unwrap_or(("default", name));
            let mut g: ProxmoxGuest = serde_json::from_value(serde_json::json!({
                "apiVersion": "homelab.dev/v1alpha1", "kind": "ProxmoxGuest",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"type": "lxc", "memoryMiB": 16, "source": {"osTemplate": "-"}},
            }))
            .expect("a minimal guest");
            g.status = Some(s.clone());
            (display_name(&g), g)
        });
        Self {
            guests: Mutex::new(guests.collect()),
            ..Default::default()
        }
    }

    /// The status `apply` gave each guest.
    pub fn applied(&self, results: &[Applied]) {
        let mut guests = self.guests.lock().expect("files lock");
        for r in results {
            if let Some(g) = guests.get_mut(&r.name) {
                g.status = Some(r.status.clone());
            }
        }
    }

    /// The guests as they are now (with the status `apply` gave them).
    pub fn guests(&self) -> Vec<ProxmoxGuest> {
        self.guests.lock().expect("files lock").values().cloned().collect()
    }
}

type Found<'a, T> = BoxFuture<'a, Result<T, ReconcileError>>;

impl Lookup for Files {
    fn guest<'a>(&'a self, namespace: &'a str, name: &'a str) -> Found<'a, Option<ProxmoxGuest>> {
        let g = self.guests.lock().expect("files lock").get(&format!("{namespace}/{name}")).cloned();
        Box::pin(async move { Ok(g) })
    }

    fn guests<'a>(&'a self, namespace: &'a str) -> Found<'a, Vec<ProxmoxGuest>> {
        let all = self.guests();
        Box::pin(async move {
            Ok(all
                .into_iter()
                .filter(|g| g.metadata.namespace.as_deref().unwrap_or("default") == namespace)
                .collect())
        })
    }

    fn proxy_host<'a>(&'a self, namespace: &'a str, name: &'a str) -> Found<'a, Option<ProxyHost>> {
        let p = self
            .proxies
            .iter()
            .find(|p| display_name(*p) == format!("{namespace}/{name}"))
            .cloned();
        Box::pin(async move { Ok(p) })
    }

    fn monitors<'a>(&'a self, namespace: &'a str) -> Found<'a, Vec<MonitorTarget>> {
        let found = self
            .monitors
            .iter()
            .filter(|m| crate::reconcile::kind::namespace(*m) == namespace)
            .cloned()
            .collect();
        Box::pin(async move { Ok(found) })
    }

    fn secret<'a>(&'a self, _namespace: &'a str, _key: &'a SecretKeyRef) -> Found<'a, SecretValue> {
        Box::pin(async { Ok(SecretValue::NotRead) })
    }
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
            monitors: None,
        }
    }

    /// What `plan` reports for one resource: checked as the API server would, resolved, observed, planned.
    pub async fn plan<K: Kind>(&self, obj: &K, lookup: &dyn Lookup) -> Result<Outcome<K::Status, K::Plan>, ReconcileError> {
        obj.admit().map_err(|e| ReconcileError::Config(format!("invalid spec: {e}")))?;
        let inputs = obj.resolve(self.env(), lookup).await?;
        obj.plan(self.env(), &inputs).await
    }

    /// Reconcile one resource until it settles or `deadline` passes.
    pub async fn apply<K: Kind>(
        &self,
        obj: &K,
        lookup: &dyn Lookup,
        deadline: Duration,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Applied<K::Status> {
        self.apply_scheduled(obj, lookup, deadline, progress, &tokio::sync::Semaphore::new(1))
            .await
    }

    /// Apply many resources with at most `concurrency` reconciles running at
    /// once (the controller's `--concurrency`), in input order for the report.
    pub async fn apply_all<K: Kind>(
        &self,
        objs: &[K],
        lookup: &dyn Lookup,
        concurrency: usize,
        deadline: Duration,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Vec<Applied<K::Status>> {
        let workers = tokio::sync::Semaphore::new(concurrency.max(1));
        let each = objs.iter().map(|o| self.apply_scheduled(o, lookup, deadline, progress, &workers));
        futures::future::join_all(each).await
    }

    /// Reconcile `obj` until it settles, holding one of `workers` only while
    /// a reconcile runs (never while waiting for a task or a requeue), exactly
    /// as a controller worker is held: many resources progress at once.
    async fn apply_scheduled<K: Kind>(
        &self,
        obj: &K,
        lookup: &dyn Lookup,
        deadline: Duration,
        progress: &(dyn Fn(&str) + Sync),
        workers: &tokio::sync::Semaphore,
    ) -> Applied<K::Status> {
        let name = display_name(obj);
        if let Err(e) = obj.admit() {
            return Applied {
                name,
                status: obj.current_status().unwrap_or_default(),
                error: Some(format!("invalid spec: {e}")),
            };
        }
        // Status as the API server would keep it: saved mid-way and after each pass.
        let sink = MemoryStatus::new(obj.current_status().unwrap_or_default());
        let error = self.settle(obj, lookup, &sink, deadline, progress, workers).await.err();
        Applied {
            name,
            status: sink.get(),
            error,
        }
    }

    /// Reconcile passes until the kind says `obj` is done (or fails).
    async fn settle<K: Kind>(
        &self,
        obj: &K,
        lookup: &dyn Lookup,
        sink: &MemoryStatus<K::Status>,
        deadline: Duration,
        progress: &(dyn Fn(&str) + Sync),
        workers: &tokio::sync::Semaphore,
    ) -> Result<(), String> {
        let name = display_name(obj);
        let (started, mut failures, mut current) = (Instant::now(), 0u32, obj.clone());
        loop {
            current.set_status(sink.get());
            let result = {
                let _worker = workers.acquire().await.expect("semaphore open");
                self.reconcile_once(&current, lookup, sink).await
            };
            let out = match result {
                Ok(out) => out,
                Err(e) if e.is_transient() && failures < K::TRANSIENT_RETRIES => {
                    failures += 1;
                    progress(&format!("{name}: retrying after: {e}"));
                    tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(failures))).await;
                    continue;
                }
                Err(e) => return Err(e.to_string()),
            };
            failures = 0;
            print_events(&name, &out.events, progress);
            let pass = current.next_pass(&out);
            sink.set(out.status);
            let late = started.elapsed() >= deadline;
            match pass {
                Pass::Done => return Ok(()),
                Pass::UntilDeadline(_) if late => return Ok(()),
                Pass::Again(_) if late => return Err(format!("not settled after {deadline:?}")),
                Pass::Again(after) | Pass::UntilDeadline(after) => tokio::time::sleep(after).await,
            }
        }
    }

    /// One reconcile: resolve, then reconcile, saving status through `sink`.
    async fn reconcile_once<K: Kind>(
        &self,
        obj: &K,
        lookup: &dyn Lookup,
        sink: &MemoryStatus<K::Status>,
    ) -> Result<Outcome<K::Status, K::Plan>, ReconcileError> {
        let inputs = obj.resolve(self.env(), lookup).await?;
        obj.reconcile(self.env(), inputs, sink).await
    }

    /// Delete (or release) what the resource owns outside, as deleting it would.
    pub async fn delete<K: Kind>(&self, obj: &K) -> Result<Vec<EventNote>, ReconcileError> {
        let sink = MemoryStatus::new(obj.current_status().unwrap_or_default());
        let mut current = obj.clone();
        let mut events = vec![];
        loop {
            current.set_status(sink.get());
            match current.cleanup(self.env(), &sink).await? {
                Cleanup::Done(e) => {
                    events.extend(e);
                    return Ok(events);
                }
                Cleanup::Requeue { status, events: e, after } => {
                    events.extend(e);
                    sink.set(status);
                    tokio::time::sleep(after.min(Duration::from_millis(250))).await;
                }
                Cleanup::Blocked { mut status, .. } => {
                    let stalled = crate::api::find_condition(K::conditions_mut(&mut status), crate::api::CONDITION_STALLED);
                    return Err(ReconcileError::Config(stalled.map(|c| c.message.clone()).unwrap_or_default()));
                }
            }
        }
    }
}

/// A one-shot reconcile's events as progress lines.
fn print_events(name: &str, events: &[EventNote], progress: &(dyn Fn(&str) + Sync)) {
    for e in events {
        progress(&format!("{name}: {}{}", if e.warning { "warning: " } else { "" }, e.note));
    }
}

/// `apply`'s table of results for one kind, as `kubectl get` would show them.
pub fn table<K: Kind>(results: &[Applied<K::Status>]) -> String {
    let mut rows = vec![K::table_header().into_iter().map(String::from).collect::<Vec<_>>()];
    rows.extend(results.iter().map(|r| K::table_row(&r.name, &r.status, r.error.as_deref())));
    render_table(&rows)
}

/// Columns padded to their widest cell; the last (message) column is left ragged.
pub fn render_table<R: AsRef<[String]>>(rows: &[R]) -> String {
    let n = rows.first().map_or(0, |r| r.as_ref().len());
    let widths: Vec<usize> = (0..n)
        .map(|i| rows.iter().map(|r| r.as_ref().get(i).map_or(0, String::len)).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.as_ref()
                .iter()
                .enumerate()
                .map(|(i, c)| if i + 1 == n { c.clone() } else { format!("{c:<w$}", w = widths[i]) })
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}
