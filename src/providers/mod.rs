//! One module per outside system, each behind a small trait so reconcilers never see HTTP.
pub mod dns;
pub mod npm;
pub mod pbs;
pub mod proxmox_api;
pub mod pve;

use std::{collections::BTreeMap, sync::Arc};

use crate::{config::Config, metrics::Metrics, notify::Notifier};

/// Every outside client the config names, built once from it and shared by
/// the controller and the one-shot commands alike.
pub struct Providers {
    pub pve: BTreeMap<String, pve::PveClient>,
    pub dns: BTreeMap<String, dns::DnsClient>,
    pub proxy: BTreeMap<String, npm::Npm>,
    pub pbs: BTreeMap<String, pbs::PbsClient>,
    /// The `notifications:` channels.
    pub notifier: Arc<Notifier>,
}

impl Default for Providers {
    fn default() -> Self {
        Self {
            pve: BTreeMap::new(),
            dns: BTreeMap::new(),
            proxy: BTreeMap::new(),
            pbs: BTreeMap::new(),
            notifier: Arc::new(Notifier::new(BTreeMap::new(), None).expect("HTTP client")),
        }
    }
}

/// A spec names an endpoint the config does not have.
#[derive(Debug, thiserror::Error)]
#[error("{field} {name:?} is not in the config's {section}: section (it names no endpoint; add one or fix {field})")]
pub struct UnknownEndpoint {
    pub field: &'static str,
    pub name: String,
    pub section: &'static str,
}

fn endpoint<'a, C>(map: &'a BTreeMap<String, C>, field: &'static str, section: &'static str, name: &str) -> Result<&'a C, UnknownEndpoint> {
    map.get(name).ok_or_else(|| UnknownEndpoint {
        field,
        name: name.to_string(),
        section,
    })
}

impl Providers {
    /// The clients of every endpoint in `config`; errors name the endpoint.
    pub fn from_config(config: &Config, metrics: Option<Arc<Metrics>>) -> Result<Self, String> {
        let mut proxy = BTreeMap::new();
        for (name, ep) in &config.proxy {
            let client = npm::Npm::new(&ep.url, &ep.identity, ep.secret.clone(), ep.timeout, metrics.clone())
                .map_err(|e| format!("proxy.{name}: {e}"))?;
            proxy.insert(name.clone(), client);
        }
        Ok(Self {
            pve: pve::client::clients_from_config(config, metrics.clone())?,
            dns: dns::clients_from_config(config, metrics.clone())?,
            proxy,
            pbs: pbs::client::clients_from_config(config, metrics.clone())?,
            notifier: Arc::new(Notifier::new(config.notifications.clone(), metrics)?),
        })
    }

    /// The client of the `proxmox:` endpoint a spec's `cluster` names.
    pub fn pve(&self, cluster: &str) -> Result<&pve::PveClient, UnknownEndpoint> {
        endpoint(&self.pve, "spec.cluster", "proxmox", cluster)
    }

    /// The client of the `dns:` endpoint a spec's `provider` names.
    pub fn dns(&self, provider: &str) -> Result<&dns::DnsClient, UnknownEndpoint> {
        endpoint(&self.dns, "spec.provider", "dns", provider)
    }

    /// The client of the `proxy:` endpoint a spec's `provider` names.
    pub fn proxy(&self, provider: &str) -> Result<&npm::Npm, UnknownEndpoint> {
        endpoint(&self.proxy, "spec.provider", "proxy", provider)
    }

    /// The client of the `pbs:` endpoint a spec's `pbs.endpoint` names.
    pub fn pbs(&self, name: &str) -> Result<&pbs::PbsClient, UnknownEndpoint> {
        endpoint(&self.pbs, "spec.pbs.endpoint", "pbs", name)
    }
}
