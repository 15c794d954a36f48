//! What each node has (storages, bridges, ISO images and templates), read
//! once per TTL and shared by every guest being created there.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use crate::providers::pve::{self, PveApi, StorageInfo};

/// What one node has, from `/nodes/{node}/storage`, `/network` and the content listings asked for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeInventory {
    pub storages: Vec<StorageInfo>,
    pub bridges: Vec<String>,
    /// Volume ids by `(storage, content)`.
    pub volumes: BTreeMap<(String, String), Vec<String>>,
}

pub struct InventoryCache {
    ttl: Duration,
    nodes: tokio::sync::Mutex<HashMap<(String, String), (Instant, NodeInventory)>>,
}

impl InventoryCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            nodes: Default::default(),
        }
    }

    /// The node's inventory with the `(storage, content)` listings asked for:
    /// two calls per node per TTL, plus one per listing not read yet.
    pub async fn node<P: PveApi>(
        &self,
        cluster: &str,
        node: &str,
        api: &P,
        listings: &[(String, &'static str)],
    ) -> Result<NodeInventory, pve::Error> {
        let mut nodes = self.nodes.lock().await;
        let key = (cluster.to_string(), node.to_string());
        if nodes.get(&key).is_none_or(|(at, _)| at.elapsed() >= self.ttl) {
            let inv = NodeInventory {
                storages: api.node_storages(node).await?,
                bridges: api.node_bridges(node).await?.into_iter().map(|i| i.iface).collect(),
                volumes: Default::default(),
            };
            nodes.insert(key.clone(), (Instant::now(), inv));
        }
        let (_, inv) = nodes.get_mut(&key).expect("inserted");
        for (storage, content) in listings {
            let k = (storage.clone(), content.to_string());
            // A storage that is missing or refuses the content is reported as such, not listed.
            let listable = inv.storages.iter().any(|s| &s.storage == storage && s.accepts(content));
            if listable && !inv.volumes.contains_key(&k) {
                let list = api.storage_content(node, storage, Some(content)).await?;
                inv.volumes.insert(k, list.into_iter().map(|v| v.volid).collect());
            }
        }
        Ok(inv.clone())
    }

    /// Drop a node's inventory: after a failed check the next attempt reads
    /// afresh, so an uploaded ISO or a new bridge is seen at once.
    pub async fn forget(&self, cluster: &str, node: &str) {
        self.nodes.lock().await.remove(&(cluster.to_string(), node.to_string()));
    }
}
