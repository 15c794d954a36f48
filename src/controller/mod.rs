//! The only module that talks to the Kubernetes API: controllers, finalizers,
//! status patches, events, metrics, health and leader election.

pub mod backoff;
pub mod context;
pub mod dns_record;
pub mod health;
pub mod proxmox_guest;
pub mod proxy_host;
pub mod shared;

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context as _;
use futures::StreamExt;
use kube::{
    Api, Client,
    core::DeserializeGuard,
    runtime::{Controller, controller, watcher},
};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{DnsRecord, ProxmoxGuest, ProxyHost},
    cli::RunArgs,
    config::Config,
    metrics::Metrics,
};

const LEASE_NAME: &str = "homelab-operator-leader";

/// Run every controller until SIGTERM/SIGINT (or loss of leadership).
pub async fn run(config: Config, args: RunArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("building the Kubernetes client (KUBECONFIG or in-cluster config)")?;
    let metrics = Arc::new(Metrics::default());
    let dns = crate::providers::dns::clients_from_config(&config, Some(metrics.clone()))
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", config.path))?;
    let pve = crate::providers::pve::client::clients_from_config(&config, Some(metrics.clone()))
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", config.path))?;
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();

    let health_state = health::HealthState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let health = tokio::spawn(health::serve(args.metrics_addr.clone(), health_state, shutdown.clone()));
    spawn_signal_handler(shutdown.clone());

    // Fail fast with a clear message when the CRDs are missing.
    Api::<ProxmoxGuest>::all(client.clone())
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .context("listing ProxmoxGuests (are the CRDs installed? kubectl apply --server-side -f crds/)")?;
    ready.store(true, std::sync::atomic::Ordering::Relaxed);

    let leadership = if args.no_leader_election {
        tracing::warn!("leader election off: make sure only one replica runs");
        None
    } else {
        let ns = args.lease_namespace.clone().unwrap_or_else(|| "default".into());
        let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("homelab-operator-{}", std::process::id()));
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
            .with_namespace(ns.clone())
            .with_identity(identity.clone())
            .with_duration(15)
            .with_grace(5)
            .build()
            .await
            .context("creating the leader lease manager")?;
        let (mut rx, task) = manager.watch().await;
        tracing::info!(lease = LEASE_NAME, namespace = %ns, %identity, "waiting for leadership");
        loop {
            if *rx.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = rx.changed() => { r.context("leader election stopped")?; }
            }
        }
        tracing::info!("acquired leadership");
        // Lost leadership means another replica may act: stop everything at once.
        let lost = shutdown.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                if !*rx.borrow() {
                    tracing::error!("lost leadership; shutting down");
                    lost.cancel();
                    return;
                }
            }
            lost.cancel();
        });
        Some(task)
    };

    let mut proxy = std::collections::BTreeMap::new();
    for (name, ep) in &config.proxy {
        let c = crate::providers::npm::Npm::new(&ep.url, &ep.identity, ep.secret.clone(), ep.timeout, Some(metrics.clone()))
            .map_err(|e| anyhow::anyhow!("config file {}: proxy.{name}: {e}", config.path))?;
        proxy.insert(name.clone(), c);
    }
    let ctx = Arc::new(context::Context::new(client.clone(), pve, dns, metrics).with_proxies(proxy));
    let config = || {
        controller::Config::default()
            .concurrency(args.concurrency)
            .debounce(Duration::from_millis(500))
    };
    let stop = shutdown.clone();
    let guests = Controller::new(
        Api::<DeserializeGuard<ProxmoxGuest>>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    // A child DnsRecord's readiness rolls up into its guest's Ready condition.
    .owns(Api::<DnsRecord>::all(client.clone()), watcher::Config::default())
    .owns(Api::<ProxyHost>::all(client.clone()), watcher::Config::default())
    .with_config(config())
    .graceful_shutdown_on(async move { stop.cancelled().await })
    .run(proxmox_guest::reconcile, proxmox_guest::error_policy, ctx.clone())
    .for_each(|res| async move {
        if let Err(e) = res {
            tracing::debug!(error = %e, "guest reconcile failed");
        }
    });
    let stop = shutdown.clone();
    let records = Controller::new(
        Api::<DeserializeGuard<DnsRecord>>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let store = records.store();
    // A guest's new address re-reconciles the records that publish it.
    let records = records
        .watches(Api::<ProxmoxGuest>::all(client.clone()), watcher::Config::default(), move |g| {
            dns_record::records_targeting(&store, &g)
        })
        .with_config(config())
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(dns_record::reconcile, dns_record::error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "record reconcile failed");
            }
        });
    let stop = shutdown.clone();
    let proxies = Controller::new(
        Api::<DeserializeGuard<ProxyHost>>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let store = proxies.store();
    // A guest's new address re-reconciles the proxy hosts that forward to it.
    let proxies = proxies
        .watches(Api::<ProxmoxGuest>::all(client.clone()), watcher::Config::default(), move |g| {
            proxy_host::proxies_targeting(&store, &g)
        })
        .with_config(config())
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(proxy_host::reconcile, proxy_host::error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "proxy reconcile failed");
            }
        });
    tokio::join!(guests, records, proxies);
    shutdown.cancel();
    if let Some(task) = leadership {
        task.abort();
    }
    let _ = health.await;
    tracing::info!("stopped");
    Ok(())
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
