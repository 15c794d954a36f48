//! Restoring a backup to a new VMID (`POST /nodes/{node}/qemu` with
//! `archive=`, `POST /nodes/{node}/lxc` with `restore=1`): the guest comes
//! back with its backed-up config, its disks allocated anew on `storage`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::props::*;
use super::state::*;

/// Whether a create request is a restore.
pub(super) fn is_restore(kind: &str, params: &BTreeMap<String, String>) -> bool {
    match kind {
        "lxc" => params.get("restore").is_some_and(|r| r == "1"),
        _ => params.contains_key("archive"),
    }
}

impl State {
    pub(super) fn restore(
        &mut self,
        node: &str,
        kind: &str,
        vmid: u32,
        params: &BTreeMap<String, String>,
        failure: Option<String>,
    ) -> Result<Value, SimError> {
        let key = if kind == "lxc" { "ostemplate" } else { "archive" };
        let volid = params.get(key).cloned().unwrap_or_default();
        let backup = self
            .find_backup(&volid)
            .ok_or_else(|| fail(500, format!("volume '{volid}' does not exist")))?;
        if backup.kind != kind {
            let what = if kind == "lxc" {
                "a VM backup as a container"
            } else {
                "a container backup as a VM"
            };
            return Err(fail(500, format!("unable to restore {what} ({volid})")));
        }
        if let Some(st) = params.get("storage") {
            self.check_volume_storage(kind, "storage", st)?;
        }
        let unique = params.get("unique").is_some_and(|u| u == "1");
        self.insert_guest({
            let mut g = SimGuest::new(vmid, kind, node, BTreeMap::new(), false);
            g.lock = Some("create".into());
            g
        });
        let mut config = BTreeMap::new();
        for (k, v) in &backup.config {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            let val = match self.restored_value(kind, vmid, k, &text, params.get("storage"), unique) {
                Ok(val) => val,
                Err(e) => {
                    self.guests.remove(&vmid);
                    return Err(e);
                }
            };
            config.insert(k.clone(), if v.is_string() { json!(val) } else { v.clone() });
            self.guests.get_mut(&vmid).expect("inserted").config = config.clone();
        }
        let task = if kind == "lxc" { "vzrestore" } else { "qmrestore" };
        Ok(self.start_task(node, task, &vmid.to_string(), Effect::Created(vmid), failure))
    }

    /// One config entry of the restored guest: disks allocated on the target
    /// storage at their backed-up size, MACs new when `unique`.
    fn restored_value(
        &mut self,
        kind: &str,
        vmid: u32,
        key: &str,
        value: &str,
        storage: Option<&String>,
        unique: bool,
    ) -> Result<String, SimError> {
        if is_disk_key(kind, key) {
            let items = split_props(value);
            let Some((store, rest)) = items[0].1.split_once(':') else {
                return Ok(value.to_string());
            };
            if rest.starts_with("iso/") || items[0].1 == "none" {
                return Ok(value.to_string());
            }
            let target = storage.cloned().unwrap_or_else(|| store.to_string());
            if rest.contains("cloudinit") {
                return self.materialize(kind, vmid, key, &format!("{target}:cloudinit"), None);
            }
            let gib = prop(&items, "size").and_then(parse_size).unwrap_or(1 << 30) as f64 / (1u64 << 30) as f64;
            let mut fresh = vec![(None, format!("{target}:{gib}"))];
            fresh.extend(items[1..].iter().filter(|(k, _)| k.as_deref() != Some("size")).cloned());
            return self.materialize(kind, vmid, key, &join_props(&fresh), None);
        }
        if unique && key.starts_with("net") && key[3..].parse::<u8>().is_ok() {
            let mac = self.new_mac();
            let items: Vec<(Option<String>, String)> = split_props(value)
                .into_iter()
                .map(|(k, v)| match (&k, kind) {
                    (Some(m), "qemu") if !matches!(m.as_str(), "bridge" | "firewall" | "tag" | "mtu" | "queues" | "rate" | "link_down") => {
                        (k, mac.clone())
                    }
                    (Some(h), "lxc") if h == "hwaddr" => (k, mac.clone()),
                    _ => (k, v),
                })
                .collect();
            return Ok(join_props(&items));
        }
        Ok(value.to_string())
    }
}
