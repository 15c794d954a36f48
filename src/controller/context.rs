//! The shared context every reconcile gets: built in one place, easy to fake.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};

use super::backoff::Backoff;
use crate::{
    metrics::Metrics,
    providers::pve::PveClient,
    reconcile::cache::{ClusterCache, DriftClock},
};

/// Checks running at once, over all monitors.
pub const MONITOR_CONCURRENCY: usize = 32;

pub struct Context {
    pub client: Client,
    /// One shared recorder so events aggregate.
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub pve: BTreeMap<String, PveClient>,
    pub dns: BTreeMap<String, crate::providers::dns::DnsClient>,
    pub proxy: BTreeMap<String, crate::providers::npm::Npm>,
    pub pbs: BTreeMap<String, crate::providers::pbs::PbsClient>,
    /// The `notifications:` channels, built once.
    pub notifier: Arc<crate::notify::Notifier>,
    /// Every MonitorTarget's checks (run by `controller::run` while it leads).
    pub monitors: Arc<crate::monitor::scheduler::Scheduler>,
    pub cache: ClusterCache,
    pub drift: DriftClock,
    pub backoff: Backoff,
    /// UIDs of guests with a Proxmox task in flight (the `tasks_in_flight` gauge).
    tasks: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Context {
    pub fn new(
        client: Client,
        pve: BTreeMap<String, PveClient>,
        dns: BTreeMap<String, crate::providers::dns::DnsClient>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: "homelab-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let status = Arc::new(super::monitor_target::KubeStatus(client.clone()));
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            pve,
            dns,
            proxy: BTreeMap::new(),
            pbs: BTreeMap::new(),
            notifier: Arc::new(crate::notify::Notifier::new(BTreeMap::new(), None).expect("HTTP client")),
            monitors: crate::monitor::scheduler::Scheduler::new(
                Arc::new(crate::notify::Notifier::new(BTreeMap::new(), None).expect("HTTP client")),
                status,
                MONITOR_CONCURRENCY,
                None,
            ),
            // One bulk read serves every guest reconciled in this window; our own
            // writes invalidate it, so the TTL only bounds how late an
            // out-of-band power change is seen.
            cache: ClusterCache::new(Duration::from_secs(30)),
            // Full config reads (drift checks) per guest every ~10 min, spread out.
            drift: DriftClock::new(Duration::from_secs(600)),
            backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
            tasks: Default::default(),
        }
    }

    /// Every outside client the config names, built once.
    pub fn from_config(client: Client, config: &crate::config::Config, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let at = |e: String| anyhow::anyhow!("config file {}: {e}", config.path);
        let dns = crate::providers::dns::clients_from_config(config, Some(metrics.clone())).map_err(at)?;
        let pve = crate::providers::pve::client::clients_from_config(config, Some(metrics.clone())).map_err(at)?;
        let mut proxy = BTreeMap::new();
        for (name, ep) in &config.proxy {
            let c = crate::providers::npm::Npm::new(&ep.url, &ep.identity, ep.secret.clone(), ep.timeout, Some(metrics.clone()))
                .map_err(|e| at(format!("proxy.{name}: {e}")))?;
            proxy.insert(name.clone(), c);
        }
        let pbs = crate::providers::pbs::client::clients_from_config(config, Some(metrics.clone())).map_err(at)?;
        let notifier = crate::notify::Notifier::new(config.notifications.clone(), Some(metrics.clone())).map_err(at)?;
        let mut ctx = Self::new(client, pve, dns, metrics).with_proxies(proxy).with_backup_servers(pbs);
        ctx.notifier = Arc::new(notifier);
        ctx.monitors = crate::monitor::scheduler::Scheduler::new(
            ctx.notifier.clone(),
            Arc::new(super::monitor_target::KubeStatus(ctx.client.clone())),
            MONITOR_CONCURRENCY,
            Some(ctx.metrics.clone()),
        );
        Ok(ctx)
    }

    /// The `proxy:` endpoints' clients.
    pub fn with_proxies(mut self, proxy: BTreeMap<String, crate::providers::npm::Npm>) -> Self {
        self.proxy = proxy;
        self
    }

    /// The `pbs:` endpoints' clients.
    pub fn with_backup_servers(mut self, pbs: BTreeMap<String, crate::providers::pbs::PbsClient>) -> Self {
        self.pbs = pbs;
        self
    }

    /// The client of a `proxmox:` endpoint named in a spec.
    pub fn pve_client(&self, cluster: &str) -> Result<&PveClient, crate::reconcile::ReconcileError> {
        self.pve.get(cluster).ok_or_else(|| {
            crate::reconcile::ReconcileError::Config(format!(
                "spec.cluster {cluster:?} names no endpoint in the config's proxmox: section"
            ))
        })
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
