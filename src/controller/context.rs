//! The shared context every reconcile gets: built in one place, easy to fake.

use std::{sync::Arc, time::Duration};

use kube::{Api, Client, ResourceExt, runtime::events::Reporter};

use super::{backoff::Backoff, status::StatusWriter};
use crate::{
    api::{MonitorTarget, MonitorTargetStatus},
    metrics::Metrics,
    monitor::scheduler::Scheduler,
    providers::Providers,
    reconcile::{
        Env,
        cache::{ClusterCache, DriftClock},
        monitor_target::Monitors,
    },
    status::StatusSink,
};

/// Checks running at once, over all monitors.
pub const MONITOR_CONCURRENCY: usize = 32;

pub struct Context {
    pub client: Client,
    /// One shared recorder so events aggregate.
    pub recorder: super::events::Events,
    pub metrics: Arc<Metrics>,
    /// The outside systems' clients and the notifier, built once from the config.
    pub providers: Providers,
    /// Every MonitorTarget's checks (run by `controller::run` while it leads).
    pub monitors: Arc<crate::monitor::scheduler::Scheduler>,
    pub cache: ClusterCache,
    pub drift: DriftClock,
    pub backoff: Backoff,
    /// The guest controller's cache, once it runs (what policies resolve members from).
    pub guests: std::sync::OnceLock<kube::runtime::reflector::Store<kube::core::DeserializeGuard<crate::api::ProxmoxGuest>>>,
    /// UIDs of guests with a Proxmox task in flight (the `tasks_in_flight` gauge).
    tasks: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Context {
    pub fn new(client: Client, providers: Providers, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: "homelab-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let monitors = crate::monitor::scheduler::Scheduler::new(providers.notifier.clone(), MONITOR_CONCURRENCY, Some(metrics.clone()));
        Self {
            recorder: super::events::Events::new(client.clone(), reporter),
            client,
            metrics,
            providers,
            monitors,
            // One bulk read serves every guest reconciled in this window; our own
            // writes invalidate it, so the TTL only bounds how late an
            // out-of-band power change is seen.
            cache: ClusterCache::new(Duration::from_secs(30)),
            // Full config reads (drift checks) per guest every ~10 min, spread out.
            drift: DriftClock::new(Duration::from_secs(600)),
            backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
            guests: Default::default(),
            tasks: Default::default(),
        }
    }

    /// Every outside client the config names, built once.
    pub fn from_config(client: Client, config: &crate::config::Config, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let providers =
            Providers::from_config(config, Some(metrics.clone())).map_err(|e| anyhow::anyhow!("config file {}: {e}", config.path))?;
        Ok(Self::new(client, providers, metrics))
    }

    /// What the shared reconcilers read from.
    pub fn env(&self) -> Env<'_> {
        Env {
            providers: &self.providers,
            cache: &self.cache,
            drift: &self.drift,
            monitors: Some(self),
        }
    }

    /// Record whether this object has a task in flight and update the gauge.
    pub fn track_task(&self, uid: &str, in_flight: bool) {
        let mut tasks = self.tasks.lock().expect("tasks lock");
        if in_flight {
            tasks.insert(uid.to_string());
        } else {
            tasks.remove(uid);
        }
        self.metrics
            .tasks_in_flight
            .get_or_create(&crate::metrics::SystemLabels { system: "pve" })
            .set(tasks.len() as i64);
    }
}

impl Monitors for Context {
    fn scheduler(&self) -> &Scheduler {
        &self.monitors
    }

    fn sink(&self, m: &MonitorTarget) -> Arc<dyn StatusSink<MonitorTargetStatus>> {
        let api: Api<MonitorTarget> = Api::namespaced(self.client.clone(), m.metadata.namespace.as_deref().unwrap_or("default"));
        Arc::new(StatusWriter::new(api, m.name_any(), m.status.as_ref()))
    }
}
