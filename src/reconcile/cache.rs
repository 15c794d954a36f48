//! Shared observation: one `/cluster/resources` call per cluster serves every
//! guest's node, power state, lock and tags for a short TTL; one listing of a
//! DNS zone serves its records, one of an NPM endpoint its hosts, one of a
//! PBS datastore its policies; and a drift clock that spreads full config
//! reads over time.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::providers::pve::{self, ClusterResource, PveApi};

/// How long a handed-out VMID stays reserved (the guest shows up in the snapshot long before).
const RESERVATION: Duration = Duration::from_secs(600);

pub struct ClusterCache {
    ttl: Duration,
    resources: super::listings::Listings<Vec<ClusterResource>>,
    /// VMIDs this process handed out recently, per cluster: concurrent workers
    /// never race each other for the same id (other clients still can; the
    /// create call's conflict error covers that).
    reserved: Mutex<HashMap<String, HashMap<u32, Instant>>>,
    /// Guests placed on a node but not yet running there (so not in the node's
    /// memory figures), by cluster and resource UID: (node, bytes, when).
    placed: Mutex<HashMap<String, HashMap<String, Placement>>>,
    /// Nodes' storages, bridges and images, for the checks before a creation.
    pub inventory: super::inventory::InventoryCache,
    /// When each guest's agent is worth asking.
    pub agent: super::agent::AgentClock,
    /// DNS zones listed once for all their records.
    pub zones: super::dns_record::zones::ZoneListings,
    /// Nginx Proxy Manager hosts listed once per endpoint for all ProxyHosts.
    pub proxy_hosts: super::proxy_host::hosts::HostListings,
    /// PBS datastore snapshots listed once for all the policies backing up there.
    pub snapshots: super::listings::Listings<super::backup_policy::pbs::ListedSnapshots>,
}

/// A recent placement: node, memory in bytes, when.
type Placement = (String, u64, Instant);

/// How long a placement counts against its node before the node's own figures show it.
const PLACEMENT_WINDOW: Duration = Duration::from_secs(120);

impl ClusterCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            resources: Default::default(),
            reserved: Mutex::new(HashMap::new()),
            placed: Mutex::new(HashMap::new()),
            inventory: super::inventory::InventoryCache::new(ttl),
            agent: Default::default(),
            zones: Default::default(),
            proxy_hosts: Default::default(),
            snapshots: Default::default(),
        }
    }

    /// The cluster's guests, fetched at most once per TTL however many reconciles ask
    /// (concurrent callers wait for the one fetch in flight).
    pub async fn resources<P: PveApi>(&self, cluster: &str, api: &P) -> Result<Arc<Vec<ClusterResource>>, pve::Error> {
        self.resources.get(cluster, self.ttl, || api.cluster_resources()).await
    }

    /// A free VMID: the lowest id in neither the snapshot nor our reservations,
    /// confirmed by `/cluster/nextid?vmid=N` (one call when nobody else races us).
    pub async fn allocate_vmid<P: PveApi>(&self, cluster: &str, api: &P, resources: &[ClusterResource]) -> Result<u32, pve::Error> {
        let mut taken: std::collections::BTreeSet<u32> = resources.iter().map(|r| r.vmid as u32).collect();
        let mut last_err = None;
        for _ in 0..8 {
            let candidate = {
                let mut reserved = self.reserved.lock().expect("reserved lock");
                let mine = reserved.entry(cluster.to_string()).or_default();
                mine.retain(|_, at| at.elapsed() < RESERVATION);
                let id = (100u32..)
                    .find(|id| !taken.contains(id) && !mine.contains_key(id))
                    .expect("a free id");
                mine.insert(id, Instant::now());
                id
            };
            match api.next_id(Some(candidate)).await {
                Ok(id) => return Ok(id),
                Err(e) if e.class() == pve::ErrorClass::Conflict => {
                    taken.insert(candidate);
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("loop ran"))
    }

    /// Keep a VMID recorded in some guest's status (created or not) out of
    /// the allocator's hands, however long that guest waits for a fix.
    pub fn reserve(&self, cluster: &str, vmid: u32) {
        self.reserved
            .lock()
            .expect("reserved lock")
            .entry(cluster.to_string())
            .or_default()
            .insert(vmid, Instant::now());
    }

    /// Record that `uid` goes to `node` with `bytes` of memory; returns the memory
    /// the other recent placements (not `uid`'s own) take per node.
    pub fn placements_besides(&self, cluster: &str, uid: &str) -> HashMap<String, u64> {
        let mut placed = self.placed.lock().expect("placed lock");
        let mine = placed.entry(cluster.to_string()).or_default();
        mine.retain(|_, (_, _, at)| at.elapsed() < PLACEMENT_WINDOW);
        let mut out = HashMap::new();
        for (_, (node, bytes, _)) in mine.iter().filter(|(u, _)| u.as_str() != uid) {
            *out.entry(node.clone()).or_default() += bytes;
        }
        out
    }

    pub fn record_placement(&self, cluster: &str, uid: &str, node: &str, bytes: u64) {
        self.placed
            .lock()
            .expect("placed lock")
            .entry(cluster.to_string())
            .or_default()
            .insert(uid.to_string(), (node.to_string(), bytes, Instant::now()));
    }

    /// How old the cluster's snapshot is (zero when there is none): uptimes
    /// read from it are at least that much older now.
    pub async fn snapshot_age(&self, cluster: &str) -> Duration {
        self.resources.age(cluster).await
    }

    /// After a write, the next reader fetches fresh data.
    pub async fn invalidate(&self, cluster: &str) {
        self.resources.forget(cluster).await;
    }
}

/// When each guest's full config was last read; reads are due after `period`
/// plus a per-guest offset so a thousand guests do not all read at once.
pub struct DriftClock {
    period: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl DriftClock {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// How often each guest's config is read in full.
    pub fn period(&self) -> Duration {
        self.period
    }

    pub fn due(&self, uid: &str) -> bool {
        let last = self.last.lock().expect("drift lock");
        match last.get(uid) {
            None => true,
            Some(at) => at.elapsed() >= self.period + self.offset(uid),
        }
    }

    pub fn mark_read(&self, uid: &str) {
        self.last.lock().expect("drift lock").insert(uid.to_string(), Instant::now());
    }

    /// Force the next reconcile to read (after a write, to verify it).
    pub fn expire(&self, uid: &str) {
        self.last.lock().expect("drift lock").remove(uid);
    }

    pub fn forget(&self, uid: &str) {
        self.expire(uid);
    }

    fn offset(&self, uid: &str) -> Duration {
        let h = uid.bytes().fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
        let spread = self.period.as_millis().max(1) as u64 / 2;
        Duration::from_millis(h % spread.max(1))
    }
}
