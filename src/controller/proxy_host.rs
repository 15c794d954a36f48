//! A ProxyHost needs nothing of Kubernetes beyond the shared reconcile but the
//! guest it targets, whose changes re-reconcile it.

use kube::{
    core::DeserializeGuard,
    runtime::reflector::{ObjectRef, Store},
};

use super::{driver::Controlled, shared::targeting};
use crate::api::{ProxmoxGuest, ProxyHost};

impl Controlled for ProxyHost {}

/// The ProxyHosts that forward to this guest (for `Controller::watches`).
pub fn proxies_targeting(store: &Store<DeserializeGuard<ProxyHost>>, guest: &ProxmoxGuest) -> Vec<ObjectRef<DeserializeGuard<ProxyHost>>> {
    targeting(store, guest, |p: &ProxyHost| p.spec.target.as_ref().map(|t| t.name.as_str()))
}
