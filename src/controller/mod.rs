//! The only module that talks to the Kubernetes API: controllers, finalizers,
//! status patches, events, metrics, health and leader election.

pub mod api_words;
pub mod backoff;
pub mod backup_policy;
pub mod context;
pub mod dns_record;
pub mod driver;
pub mod events;
pub mod guest_watch;
pub mod health;
pub mod housekeeping;
pub mod leader;
pub mod lookup;
pub mod monitor_target;
pub mod proxmox_guest;
pub mod proxy_host;
pub mod shared;
pub mod status;
pub mod update_policy;

use std::{
    fmt::Debug,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;
use futures::{Stream, StreamExt, TryStreamExt};
use kube::{
    Api, Client, Resource,
    core::DeserializeGuard,
    runtime::{Controller, Predicate, WatchStreamExt, controller, predicates, reflector, watcher},
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::{
    api::{BackupPolicy, DnsRecord, MonitorTarget, ProxmoxGuest, ProxyHost, UpdatePolicy},
    config::Config,
    metrics::Metrics,
};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArg,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Act without holding the leader Lease (local runs with one replica only).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Namespace of the leader Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Seconds between full reads of each guest's config (drift checks), spread over guests.
    #[arg(long, default_value_t = 600)]
    pub drift_interval: u64,
    /// Concurrent reconciles per kind.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: u16,
    /// Seconds between writes of a MonitorTarget's figures (latency, last check, uptime) while
    /// its state stays the same; state changes are written at once.
    #[arg(long, default_value_t = crate::monitor::scheduler::FIGURES_EVERY.as_secs())]
    pub monitor_figures_every: u64,
}

/// Reconciles in flight at once, for `run` (per kind) and `apply` alike.
pub const DEFAULT_CONCURRENCY: u16 = 8;

/// Run every controller until SIGTERM/SIGINT (or loss of leadership).
pub async fn run(config: Config, args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("building the Kubernetes client (KUBECONFIG or in-cluster config)")?;
    let metrics = Arc::new(Metrics::default());
    let mut ctx = context::Context::from_config(client.clone(), &config, metrics.clone())?;
    ctx.drift = crate::reconcile::cache::DriftClock::new(Duration::from_secs(args.drift_interval));
    match Arc::get_mut(&mut ctx.monitors) {
        Some(s) => s.summary_every = Duration::from_secs(args.monitor_figures_every),
        None => tracing::warn!("monitor figures cadence not set: the scheduler is already shared"),
    }
    let ctx = Arc::new(ctx);
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();
    let health_state = health::HealthState {
        metrics,
        ready: ready.clone(),
    };
    let health = tokio::spawn(health::serve(args.metrics_addr.clone(), health_state, shutdown.clone()));
    spawn_signal_handler(shutdown.clone());

    // Fail fast with a clear message when the CRDs are missing.
    Scope::new(client.clone(), args.namespace.as_deref())
        .api::<ProxmoxGuest>()
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .context("listing ProxmoxGuests (are the CRDs installed? kubectl apply --server-side -f crds/)")?;
    ready.store(true, std::sync::atomic::Ordering::Relaxed);

    let leadership = if args.no_leader_election {
        tracing::warn!("leader election off: make sure only one replica runs");
        None
    } else {
        let ns = args.lease_namespace.clone().unwrap_or_else(|| "default".into());
        match leader::acquire(client.clone(), &ns, shutdown.clone()).await? {
            Some(task) => Some(task),
            None => return Ok(()),
        }
    };

    let controller_config = controller::Config::default()
        .concurrency(args.concurrency)
        .debounce(Duration::from_millis(500));
    run_controllers(
        Scope::new(client, args.namespace.as_deref()),
        ctx,
        controller_config,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    if let Some(task) = leadership {
        task.abort();
    }
    let _ = health.await;
    tracing::info!("stopped");
    Ok(())
}

/// The controllers of every kind, until `shutdown`.
/// The namespace the controllers watch (or all of them).
#[derive(Clone)]
pub struct Scope {
    client: Client,
    namespace: Option<String>,
}

impl Scope {
    pub fn new(client: Client, namespace: Option<&str>) -> Self {
        Self {
            client,
            namespace: namespace.map(str::to_string),
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

async fn run_controllers(scope: Scope, ctx: Arc<context::Context>, config: controller::Config, shutdown: CancellationToken) {
    let stop = || {
        let s = shutdown.clone();
        async move { s.cancelled().await }
    };
    // One watch of guests: the guest controller's, handed on to the others.
    let mut watch = guest_watch::GuestWatch::default();
    let (for_records, for_proxies, for_monitors) = (watch.subscribe(), watch.subscribe(), watch.subscribe());
    let (for_policies, for_updates) = (watch.subscribe(), watch.subscribe());
    let guests = guest_controller(&scope, watch);
    let _ = ctx.guests.set(guests.store());
    let guests = guests
        .with_config(config.clone())
        .graceful_shutdown_on(stop())
        .run(driver::reconcile, shared::error_policy, ctx.clone())
        .for_each(log_result("guest"));
    let records = main_controller::<DnsRecord>(&scope);
    let store = records.store();
    // A guest's new address re-reconciles the records that publish it.
    let records = records
        .watches_shared_stream(guest_watch::guests(for_records), move |g| dns_record::records_targeting(&store, &g))
        .with_config(config.clone())
        .graceful_shutdown_on(stop())
        .run(driver::reconcile, shared::error_policy, ctx.clone())
        .for_each(log_result("record"));
    let proxies = main_controller::<ProxyHost>(&scope);
    let store = proxies.store();
    // A guest's new address re-reconciles the proxy hosts that forward to it.
    let proxies = proxies
        .watches_shared_stream(guest_watch::guests(for_proxies), move |g| proxy_host::proxies_targeting(&store, &g))
        .with_config(config.clone())
        .graceful_shutdown_on(stop())
        .run(driver::reconcile, shared::error_policy, ctx.clone())
        .for_each(log_result("proxy"));
    let policies = main_controller::<BackupPolicy>(&scope);
    let store = policies.store();
    // A guest created, relabelled or deleted changes the members of its policies
    // (its other status writes do not).
    let policies = policies
        .watches_shared_stream(guest_watch::key_changes(for_policies, backup_policy::membership_key), move |g| {
            backup_policy::policies_of(&store, &g)
        })
        .with_config(config.clone())
        .graceful_shutdown_on(stop())
        .run(driver::reconcile, shared::error_policy, ctx.clone())
        .for_each(log_result("backup"));
    let updates = main_controller::<UpdatePolicy>(&scope);
    let store = updates.store();
    // Membership changes as for backups.
    let updates = updates
        .watches_shared_stream(guest_watch::key_changes(for_updates, backup_policy::membership_key), move |g| {
            update_policy::policies_of(&store, &g)
        })
        .with_config(config.clone())
        .graceful_shutdown_on(stop())
        .run(driver::reconcile, shared::error_policy, ctx.clone())
        .for_each(log_result("update"));
    // Checks run only here, on the Lease holder.
    let checks = tokio::spawn(ctx.monitors.clone().run());
    let housekeeping = tokio::spawn(housekeeping::every_minute(ctx.clone()));
    let monitors = main_controller::<MonitorTarget>(&scope);
    let store = monitors.store();
    // A guest's new address moves the checks that target it.
    let monitors = monitors
        .watches_shared_stream(guest_watch::guests(for_monitors), move |g| {
            monitor_target::monitors_targeting(&store, &g)
        })
        .with_config(config)
        .graceful_shutdown_on(stop())
        .run(driver::reconcile, shared::error_policy, ctx.clone())
        .for_each(log_result("monitor"));
    tokio::join!(guests, records, proxies, policies, updates, monitors);
    checks.abort();
    housekeeping.abort();
}

/// The ProxmoxGuest controller with what re-reconciles a guest besides its
/// own changes: its children's readiness, a policy it names coming or going.
fn guest_controller(scope: &Scope, watch: guest_watch::GuestWatch) -> Controller<DeserializeGuard<ProxmoxGuest>> {
    let guests = forwarding_controller::<ProxmoxGuest>(scope, move |event| watch.forward(event));
    let (backup_store, update_store) = (guests.store(), guests.store());
    guests
        // A policy a guest names appearing or going changes the guest's Degraded condition.
        .watches_stream(key_changes(scope.api::<BackupPolicy>(), |_| 0), move |p| {
            proxmox_guest::guests_naming(&backup_store, &p, |g| g.spec.backup.as_ref().map(|b| b.policy.as_str()))
        })
        .watches_stream(key_changes(scope.api::<UpdatePolicy>(), |_| 0), move |p| {
            proxmox_guest::guests_naming(&update_store, &p, |g| g.spec.updates.as_ref().map(|u| u.policy.as_str()))
        })
        // A child's readiness rolls up into its guest's Ready condition.
        .owns(scope.api::<DnsRecord>(), watcher::Config::default())
        .owns(scope.api::<ProxyHost>(), watcher::Config::default())
        // A monitor writes its latency once a minute: only its verdict matters here.
        .owns_stream(key_changes(scope.api::<MonitorTarget>(), monitor_target::verdict_key))
}

fn log_result<T, E: std::fmt::Display>(kind: &'static str) -> impl FnMut(Result<T, E>) -> std::future::Ready<()> {
    move |res| {
        if let Err(e) = res {
            tracing::debug!(error = %e, kind, "reconcile failed");
        }
        std::future::ready(())
    }
}

/// A controller for kind `K` whose own trigger ignores status-only updates:
/// the operator's status writes must not start another reconcile (that would
/// turn every error report into a hot loop and skip the error backoff).
/// Spec edits and deletion (generation), finalizers, labels and annotations
/// still trigger; so do requeues and the owned/watched kinds.
pub fn main_controller<K>(scope: &Scope) -> Controller<DeserializeGuard<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    forwarding_controller(scope, |_| {})
}

/// A main controller whose watch events also go to `forward`, once its cache has them.
fn forwarding_controller<K>(
    scope: &Scope,
    forward: impl Fn(&watcher::Event<DeserializeGuard<K>>) + Send + 'static,
) -> Controller<DeserializeGuard<K>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    Controller::for_stream(trigger_stream(scope.api(), writer, forward), reader)
}

fn trigger_stream<K>(
    api: Api<DeserializeGuard<K>>,
    writer: reflector::store::Writer<DeserializeGuard<K>>,
    forward: impl Fn(&watcher::Event<DeserializeGuard<K>>) + Send + 'static,
) -> impl Stream<Item = Result<DeserializeGuard<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let changed = predicates::generation
        .combine(predicates::finalizers)
        .combine(predicates::labels)
        .combine(predicates::annotations);
    watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .inspect_ok(forward)
        .applied_objects()
        .predicate_filter(changed, Default::default())
}

/// What the operator never reads, left out of the reflector caches: the
/// managed fields (a third of a typical object) and kubectl's copy of the
/// last applied spec.
fn slim<K: Resource>(guard: &mut DeserializeGuard<K>) {
    if let Ok(obj) = &mut guard.0 {
        let meta = obj.meta_mut();
        meta.managed_fields = None;
        if let Some(a) = meta.annotations.as_mut() {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
}

/// Objects of kind `K`, but only when `key` of them changes or they go: what
/// the watching controller does not read (most status writes) must not cost
/// it a reconcile, and outside calls, each.
fn key_changes<K>(api: Api<K>, key: fn(&K) -> u64) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let keys = std::sync::Mutex::new(guest_watch::KeyChanges::default());
    watcher(api, watcher::Config::default())
        .default_backoff()
        .try_filter_map(move |event| {
            let mut keys = keys.lock().expect("key changes lock");
            std::future::ready(Ok(match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => keys.changed(&o, key(&o), false).then_some(o),
                watcher::Event::Delete(o) => keys.changed(&o, 0, true).then_some(o),
                watcher::Event::Init | watcher::Event::InitDone => None,
            }))
        })
}

fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        token.cancel();
    });
}
