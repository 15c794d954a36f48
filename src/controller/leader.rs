//! Leader election on a `coordination.k8s.io` Lease: only the holder acts.

use anyhow::Context as _;
use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const LEASE_NAME: &str = "homelab-operator-leader";
/// Seconds a lease lasts without renewal; a killed leader is replaced after about this long.
const LEASE_SECONDS: u64 = 10;
const GRACE_SECONDS: u64 = 3;

/// Wait until this process holds the lease (`None` when shut down first).
/// Losing it later cancels `shutdown` at once: another replica may act then.
pub async fn acquire(
    client: Client,
    namespace: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>>> {
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("homelab-operator-{}", std::process::id()));
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(namespace)
        .with_identity(identity.clone())
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .build()
        .await
        .context("creating the leader lease manager")?;
    let (mut rx, task) = manager.watch().await;
    tracing::info!(lease = LEASE_NAME, namespace, %identity, "waiting for leadership");
    loop {
        if *rx.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => { task.abort(); return Ok(None) }
            r = rx.changed() => { r.context("leader election stopped")?; }
        }
    }
    tracing::info!("acquired leadership");
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            if !*rx.borrow() {
                tracing::error!("lost leadership; shutting down");
                shutdown.cancel();
                return;
            }
        }
        shutdown.cancel();
    });
    Ok(Some(task))
}
