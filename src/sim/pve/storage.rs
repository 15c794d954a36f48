//! Storages, their content and the nodes' network interfaces, as
//! `/nodes/{node}/storage…` and `/nodes/{node}/network` show them.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::{Value, json};

use super::props::*;
use super::state::*;

/// A storage defined for the whole cluster (`/etc/pve/storage.cfg`).
#[derive(Clone, Debug)]
pub struct SimStorage {
    pub id: String,
    /// `dir`, `lvmthin`, `zfspool`, `nfs`, `pbs`, …
    pub kind: String,
    /// Content types it accepts: `images`, `rootdir`, `iso`, `vztmpl`, `backup`, `snippets`.
    pub content: Vec<String>,
    pub shared: bool,
}

impl SimStorage {
    pub fn new(id: &str, kind: &str, content: &str) -> Self {
        Self {
            id: id.into(),
            kind: kind.into(),
            content: content.split(',').map(str::to_string).collect(),
            shared: matches!(kind, "nfs" | "cifs" | "pbs" | "cephfs" | "rbd"),
        }
    }

    pub fn accepts(&self, content: &str) -> bool {
        self.content.iter().any(|c| c == content)
    }
}

const TOTAL: u64 = 500 << 30;

/// A backup archive on a storage (a PBS snapshot when the storage is `pbs`).
#[derive(Clone, Debug, Default)]
pub struct SimBackup {
    pub storage: String,
    pub vmid: u32,
    /// `qemu` or `lxc`.
    pub kind: String,
    pub ctime: u64,
    pub size: u64,
    /// PBS verification state (`ok`, `failed`), none when not verified.
    pub verified: Option<String>,
    pub protected: bool,
    pub notes: String,
    /// The guest's config when it was backed up (what a restore recreates).
    pub config: BTreeMap<String, Value>,
}

impl SimBackup {
    pub(super) fn volid(&self, s: &SimStorage) -> String {
        let t = jiff::Timestamp::from_second(self.ctime as i64).expect("time");
        if s.kind == "pbs" {
            let group = if self.kind == "lxc" { "ct" } else { "vm" };
            format!("{}:backup/{group}/{}/{}", s.id, self.vmid, t.strftime("%Y-%m-%dT%H:%M:%SZ"))
        } else {
            let (kind, ext) = if self.kind == "lxc" {
                ("lxc", "tar.zst")
            } else {
                ("qemu", "vma.zst")
            };
            format!(
                "{}:backup/vzdump-{kind}-{}-{}.{ext}",
                s.id,
                self.vmid,
                t.strftime("%Y_%m_%d-%H_%M_%S")
            )
        }
    }

    fn answer(&self, s: &SimStorage) -> Value {
        let format = match (s.kind.as_str(), self.kind.as_str()) {
            ("pbs", "lxc") => "pbs-ct",
            ("pbs", _) => "pbs-vm",
            (_, "lxc") => "tar.zst",
            _ => "vma.zst",
        };
        let mut e = json!({
            "volid": self.volid(s), "content": "backup", "format": format, "size": self.size,
            "ctime": self.ctime, "vmid": self.vmid, "notes": self.notes, "protected": self.protected as u8,
            "subtype": self.kind,
        });
        if let Some(v) = &self.verified {
            e["verification"] = json!({"state": v, "upid": "UPID:pbs:00000001:00000001:00000001:00000001:verify:store1:root@pam:"});
        }
        e
    }
}

/// A `pbs` storage whose backups live in a PBS simulator's datastore.
#[derive(Clone)]
pub(super) struct PbsLink {
    pub sim: Arc<crate::sim::pbs::PbsSim>,
    pub datastore: String,
}

impl SimBackup {
    fn into_snapshot(self) -> crate::sim::pbs::SimSnapshot {
        crate::sim::pbs::SimSnapshot {
            backup_type: if self.kind == "lxc" { "ct" } else { "vm" }.into(),
            backup_id: self.vmid.to_string(),
            backup_time: self.ctime as i64,
            size: self.size,
            protected: self.protected,
            comment: self.notes,
            verified: self.verified,
            guest_config: self.config,
            corrupt: false,
        }
    }

    fn from_snapshot(storage: &str, s: crate::sim::pbs::SimSnapshot) -> Option<SimBackup> {
        Some(SimBackup {
            storage: storage.into(),
            vmid: s.backup_id.parse().ok()?,
            kind: if s.backup_type == "ct" { "lxc" } else { "qemu" }.into(),
            ctime: s.backup_time as u64,
            size: s.size,
            verified: s.verified,
            protected: s.protected,
            notes: s.comment,
            config: s.guest_config,
        })
    }
}

impl State {
    /// The backups on a storage: from the PBS simulator for a linked `pbs` storage.
    pub(super) fn backups_on(&self, storage: &str) -> Vec<SimBackup> {
        match self.pbs_links.get(storage) {
            Some(l) => l
                .sim
                .snapshots(&l.datastore)
                .into_iter()
                .filter(|s| matches!(s.backup_type.as_str(), "vm" | "ct"))
                .filter_map(|s| SimBackup::from_snapshot(storage, s))
                .collect(),
            None => self.backups.iter().filter(|b| b.storage == storage).cloned().collect(),
        }
    }

    /// Where a finished vzdump puts a guest's archive.
    pub(super) fn store_backup(&mut self, b: SimBackup) {
        match self.pbs_links.get(&b.storage) {
            Some(l) => l.sim.add_snapshot(&l.datastore, b.into_snapshot()),
            None => self.backups.push(b),
        }
    }

    /// A backup by its volume id, on whichever storage holds it.
    pub(super) fn find_backup(&self, volid: &str) -> Option<SimBackup> {
        let (storage, _) = volid.split_once(':')?;
        let s = self.storage(storage).ok()?;
        self.backups_on(storage).into_iter().find(|b| b.volid(s) == volid)
    }

    pub(super) fn storage(&self, id: &str) -> Result<&SimStorage, SimError> {
        self.config
            .storages
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| fail(500, format!("storage '{id}' does not exist")))
    }

    /// PVE's refusal when a new volume goes to a storage that does not take it.
    pub(super) fn check_volume_storage(&self, kind: &str, key: &str, storage: &str) -> Result<(), SimError> {
        let s = self.storage(storage)?;
        let (content, what) = if kind == "lxc" {
            ("rootdir", "container directories")
        } else {
            ("images", "VM images")
        };
        if s.accepts(content) {
            Ok(())
        } else {
            Err(param_fail(key, format!("storage '{storage}' does not support {what}")))
        }
    }

    /// A guest's NIC bridges that the node does not have (checked when it starts, as PVE does).
    pub(super) fn missing_bridge(&self, g: &SimGuest) -> Option<String> {
        g.config
            .iter()
            .filter(|(k, _)| k.starts_with("net") && k[3..].parse::<u8>().is_ok())
            .filter_map(|(_, v)| v.as_str().and_then(|s| prop(&split_props(s), "bridge").map(str::to_string)))
            .find(|b| !self.config.bridges.contains(b))
    }

    pub(super) fn node_storages(&self, node: &str, p: &std::collections::BTreeMap<String, String>) -> Result<Value, SimError> {
        self.check_node(node)?;
        let list = self
            .config
            .storages
            .iter()
            .filter(|s| p.get("content").is_none_or(|c| c.split(',').any(|c| s.accepts(c))))
            .filter(|s| p.get("storage").is_none_or(|id| id == &s.id))
            .map(|s| {
                let used = self.used_bytes(&s.id);
                json!({
                    "storage": s.id, "type": s.kind, "content": s.content.join(","),
                    "active": 1, "enabled": 1, "shared": s.shared as u8,
                    "total": TOTAL, "used": used, "avail": TOTAL - used, "used_fraction": used as f64 / TOTAL as f64,
                })
            })
            .collect();
        Ok(Value::Array(list))
    }

    fn used_bytes(&self, storage: &str) -> u64 {
        let prefix = format!("{storage}:");
        self.guests
            .values()
            .flat_map(|g| g.config.values())
            .filter_map(|v| v.as_str())
            .filter(|v| v.starts_with(&prefix))
            .filter_map(|v| prop(&split_props(v), "size").and_then(parse_size))
            .sum()
    }

    /// `GET /nodes/{node}/storage/{storage}/content`: ISO images and container
    /// templates from the config, guest volumes from the guests' configs.
    pub(super) fn storage_content(&self, node: &str, storage: &str, content: Option<&str>) -> Result<Value, SimError> {
        self.check_node(node)?;
        let s = self.storage(storage)?;
        if let Some(c) = content
            && !s.accepts(c)
        {
            return Ok(Value::Array(vec![]));
        }
        let prefix = format!("{storage}:");
        let mut out = Vec::new();
        if content.is_none_or(|c| c == "backup") {
            out.extend(self.backups_on(storage).iter().map(|b| b.answer(s)));
        }
        for volid in self.config.volumes.iter().filter(|v| v.starts_with(&prefix)) {
            let rest = &volid[prefix.len()..];
            let (kind, format) = match rest.split_once('/') {
                Some(("iso", _)) => ("iso", "iso".to_string()),
                Some(("vztmpl", f)) => (
                    "vztmpl",
                    f.rsplit('.').next().map_or("tzst".into(), |e| format!("t{}", &e[..e.len().min(3)])),
                ),
                _ => continue,
            };
            if content.is_some_and(|c| c != kind) || !s.accepts(kind) {
                continue;
            }
            out.push(json!({"volid": volid, "content": kind, "format": format, "size": 700u64 << 20, "ctime": 1_735_689_600}));
        }
        for g in self.guests.values().filter(|g| g.node == node || s.shared) {
            for (key, v) in &g.config {
                let Some(v) = v.as_str().filter(|v| v.starts_with(&prefix) && is_disk_key(&g.kind, key)) else {
                    continue;
                };
                let items = split_props(v);
                let volid = items[0].1.clone();
                let kind = if g.kind == "lxc" { "rootdir" } else { "images" };
                if content.is_some_and(|c| c != kind) || volid.contains("cloudinit") && content.is_some() {
                    continue;
                }
                let size = prop(&items, "size").and_then(parse_size).unwrap_or(0);
                let format = if g.kind == "lxc" { "subvol" } else { "raw" };
                out.push(json!({"volid": volid, "content": kind, "format": format, "size": size, "vmid": g.vmid, "ctime": 1_735_689_600}));
            }
        }
        Ok(Value::Array(out))
    }

    /// `GET /nodes/{node}/network`: the uplink and the configured bridges.
    pub(super) fn node_network(&self, node: &str, filter: Option<&str>) -> Result<Value, SimError> {
        self.check_node(node)?;
        let bridges_only = matches!(filter, Some("bridge" | "any_bridge" | "any_local_bridge"));
        let mut out = vec![];
        if !bridges_only && filter.is_none_or(|f| f == "eth") {
            out.push(
                json!({"iface": "eno1", "type": "eth", "active": 1, "exists": 1, "method": "manual", "families": ["inet"], "priority": 3}),
            );
        }
        if filter.is_none() || bridges_only {
            for (i, b) in self.config.bridges.iter().enumerate() {
                out.push(json!({
                    "iface": b, "type": "bridge", "active": 1, "autostart": 1, "method": "manual",
                    "bridge_ports": if i == 0 { "eno1" } else { "" }, "bridge_stp": "off", "bridge_fd": "0",
                    "families": ["inet"], "priority": 4 + i,
                }));
            }
        }
        Ok(Value::Array(out))
    }
}
