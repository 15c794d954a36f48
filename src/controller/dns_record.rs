//! A DnsRecord needs nothing of Kubernetes beyond the shared reconcile but the
//! guest it targets, whose changes re-reconcile it.

use kube::{
    core::DeserializeGuard,
    runtime::reflector::{ObjectRef, Store},
};

use super::{driver::Controlled, shared::targeting};
use crate::api::{DnsRecord, ProxmoxGuest};

impl Controlled for DnsRecord {}

/// The DnsRecords that publish this guest's addresses (for `Controller::watches`).
pub fn records_targeting(store: &Store<DeserializeGuard<DnsRecord>>, guest: &ProxmoxGuest) -> Vec<ObjectRef<DeserializeGuard<DnsRecord>>> {
    targeting(store, guest, |r: &DnsRecord| r.spec.target.as_ref().map(|t| t.name.as_str()))
}
