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

pub struct Context {
    pub client: Client,
    /// One shared recorder so events aggregate.
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub pve: BTreeMap<String, PveClient>,
    pub cache: ClusterCache,
    pub drift: DriftClock,
    pub backoff: Backoff,
}

impl Context {
    pub fn new(client: Client, pve: BTreeMap<String, PveClient>, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: "homelab-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            pve,
            // One bulk read serves every guest reconciled in this window; our own
            // writes invalidate it, so the TTL only bounds how late an
            // out-of-band power change is seen.
            cache: ClusterCache::new(Duration::from_secs(30)),
            // Full config reads (drift checks) per guest every ~10 min, spread out.
            drift: DriftClock::new(Duration::from_secs(600)),
            backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(300)),
        }
    }
}
