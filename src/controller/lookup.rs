//! What resources refer to, read from the API server.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::ListParams,
    core::DeserializeGuard,
    runtime::reflector::{ObjectRef, Store},
};

use crate::{
    api::{MonitorTarget, ProxmoxGuest, ProxyHost, SecretKeyRef},
    config::SecretString,
    reconcile::{
        ReconcileError,
        kind::{Lookup, SecretValue},
    },
};

/// Reads from the API server; guests from the guest controller's cache once
/// it has them (a policy over a thousand guests would otherwise list and
/// decode every one of them, managed fields included, on each reconcile, and
/// a thousand records would read their guests once each per resync).
pub struct ApiLookup {
    client: Client,
    guests: Option<Store<DeserializeGuard<ProxmoxGuest>>>,
}

/// How long a reconcile waits for the guest cache's first listing before asking the API server itself.
const CACHE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl ApiLookup {
    pub fn new(client: Client, guests: Option<Store<DeserializeGuard<ProxmoxGuest>>>) -> Self {
        Self { client, guests }
    }

    /// The guest cache, once it has its first listing.
    async fn guest_cache(&self) -> Option<&Store<DeserializeGuard<ProxmoxGuest>>> {
        let store = self.guests.as_ref()?;
        tokio::time::timeout(CACHE_WAIT, store.wait_until_ready()).await.ok()?.ok()?;
        Some(store)
    }

    async fn cached_guests(&self, namespace: &str) -> Option<Vec<ProxmoxGuest>> {
        let store = self.guest_cache().await?;
        Some(
            store
                .state()
                .iter()
                .filter_map(|g| g.0.as_ref().ok())
                .filter(|g| g.metadata.namespace.as_deref() == Some(namespace))
                .cloned()
                .collect(),
        )
    }

    /// `None` when there is no cache yet, or the cached guest could not be
    /// read (the API server's answer then says why).
    async fn cached_guest(&self, namespace: &str, name: &str) -> Option<Option<ProxmoxGuest>> {
        let store = self.guest_cache().await?;
        match store.get(&ObjectRef::new(name).within(namespace)) {
            None => Some(None),
            Some(g) => g.0.as_ref().ok().map(|g| Some(g.clone())),
        }
    }
}

fn kube_error(what: String) -> impl FnOnce(kube::Error) -> ReconcileError {
    move |e| ReconcileError::Kubernetes(format!("{what}: {}", super::api_words::kube_words(&e)))
}

impl Lookup for ApiLookup {
    fn guest<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<ProxmoxGuest>, ReconcileError>> {
        Box::pin(async move {
            // From the cache: a guest's change reaches the controllers that follow
            // guests only after the cache has it (controller::guest_watch).
            if let Some(cached) = self.cached_guest(namespace, name).await {
                return Ok(cached);
            }
            let api: Api<ProxmoxGuest> = Api::namespaced(self.client.clone(), namespace);
            api.get_opt(name)
                .await
                .map_err(kube_error(format!("reading ProxmoxGuest {namespace}/{name}")))
        })
    }

    fn guests<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<Vec<ProxmoxGuest>, ReconcileError>> {
        Box::pin(async move {
            if let Some(cached) = self.cached_guests(namespace).await {
                return Ok(cached);
            }
            let api: Api<ProxmoxGuest> = Api::namespaced(self.client.clone(), namespace);
            let list = api.list(&ListParams::default()).await;
            Ok(list.map_err(kube_error(format!("listing the ProxmoxGuests of {namespace}")))?.items)
        })
    }

    fn proxy_host<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<ProxyHost>, ReconcileError>> {
        Box::pin(async move {
            let api: Api<ProxyHost> = Api::namespaced(self.client.clone(), namespace);
            api.get_opt(name)
                .await
                .map_err(kube_error(format!("reading ProxyHost {namespace}/{name}")))
        })
    }

    fn monitors<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<Vec<MonitorTarget>, ReconcileError>> {
        Box::pin(async move {
            let api: Api<MonitorTarget> = Api::namespaced(self.client.clone(), namespace);
            let list = api.list(&ListParams::default()).await;
            Ok(list
                .map_err(kube_error(format!("listing the MonitorTargets of {namespace}")))?
                .items)
        })
    }

    fn secret<'a>(&'a self, namespace: &'a str, key: &'a SecretKeyRef) -> BoxFuture<'a, Result<SecretValue, ReconcileError>> {
        Box::pin(async move {
            let name = &key.name;
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            let forbidden = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 403);
            let read = api.get_opt(name).await.map_err(|e| {
                // Secret access is granted per namespace (the chart's rbac.secretNamespaces).
                let hint = if forbidden(&e) {
                    format!(" (list {namespace} in the chart's rbac.secretNamespaces)")
                } else {
                    String::new()
                };
                kube_error(format!("reading Secret {namespace}/{name}"))(e).with_suffix(&hint)
            })?;
            let Some(secret) = read else {
                return Ok(SecretValue::Missing(format!("Secret {namespace}/{name} not found")));
            };
            Ok(match secret.data.as_ref().and_then(|d| d.get(&key.key)) {
                Some(b) => SecretValue::Found(SecretString::new(String::from_utf8_lossy(&b.0).into_owned())),
                None => SecretValue::Missing(format!("key {:?} not in Secret {namespace}/{name}", key.key)),
            })
        })
    }
}
