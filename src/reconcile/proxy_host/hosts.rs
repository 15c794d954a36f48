//! Proxy hosts read from one listing per NPM endpoint: every ProxyHost of an
//! endpoint shares a listing per resync interval instead of listing all hosts
//! itself; our writes amend it. Drift is still judged host by host.

use std::time::Duration;

use crate::{
    providers::npm::{Error, HostSpec, ProxyApi, ProxyHost},
    reconcile::listings::Listings,
};

/// The kept host listings, by endpoint name.
pub type HostListings = Listings<Vec<ProxyHost>>;

/// An NPM endpoint whose listings are shared: what one ProxyHost's reconciler
/// talks to. `fresh` lists the server itself (a new or changed spec, a deletion).
pub struct Listed<'a, P> {
    pub api: &'a P,
    pub hosts: &'a HostListings,
    pub endpoint: &'a str,
    pub max_age: Duration,
    pub fresh: bool,
}

impl<P: ProxyApi> Listed<'_, P> {
    /// Put `host` in place of the one with its id (or take the id out).
    async fn learned(&self, id: u64, host: Option<&ProxyHost>) {
        self.hosts
            .amend(self.endpoint, |hosts| {
                hosts.retain(|h| h.id != id);
                hosts.extend(host.cloned());
            })
            .await;
    }
}

impl<P: ProxyApi> ProxyApi for Listed<'_, P> {
    async fn list(&self) -> Result<Vec<ProxyHost>, Error> {
        if self.fresh {
            self.hosts.forget(self.endpoint).await;
        }
        Ok(self.hosts.get(self.endpoint, self.max_age, || self.api.list()).await?.to_vec())
    }

    async fn create(&self, spec: &HostSpec) -> Result<ProxyHost, Error> {
        let host = self.api.create(spec).await?;
        self.learned(host.id, Some(&host)).await;
        Ok(host)
    }

    async fn update(&self, id: u64, spec: &HostSpec) -> Result<ProxyHost, Error> {
        let host = self.api.update(id, spec).await?;
        self.learned(id, Some(&host)).await;
        Ok(host)
    }

    async fn delete(&self, id: u64) -> Result<(), Error> {
        self.api.delete(id).await?;
        self.learned(id, None).await;
        Ok(())
    }
}
