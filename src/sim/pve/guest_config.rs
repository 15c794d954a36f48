//! Guest configuration: creating, cloning and writing config as PVE does.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::props::*;
use super::state::*;

impl State {
    /// Turn the allocation syntax `STORAGE:SIZE` into a volume and check storages/volumes exist.
    pub(super) fn materialize(
        &mut self,
        kind: &str,
        vmid: u32,
        key: &str,
        value: &str,
        existing: Option<&str>,
    ) -> Result<String, SimError> {
        let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
        if is_disk_key(kind, key) {
            return self.materialize_volume(kind, vmid, key, value, existing);
        }
        if base == "net" && base.len() < key.len() {
            return self.materialize_nic(kind, vmid, key, value);
        }
        if kind == "qemu" && key == "cipassword" {
            return Ok("**********".into());
        }
        Ok(value.to_string())
    }

    /// A disk or mount point: a new volume for `STORAGE:SIZE`, the cloud-init drive, an ISO that must exist.
    fn materialize_volume(&mut self, kind: &str, vmid: u32, key: &str, value: &str, existing: Option<&str>) -> Result<String, SimError> {
        let mut items = split_props(value);
        let file_idx = items
            .iter()
            .position(|(k, _)| k.is_none() || matches!(k.as_deref(), Some("file") | Some("volume")));
        let Some(i) = file_idx else {
            return Ok(value.to_string());
        };
        let file = items[i].1.clone();
        if file.starts_with('/') || file == "none" {
            return Ok(value.to_string()); // bind mount or empty drive
        }
        let Some((storage, rest)) = file.split_once(':') else {
            return Err(param_fail(key, format!("invalid format - unable to parse volume ID '{file}'")));
        };
        let is_iso = rest.starts_with("iso/");
        self.storage(storage)?;
        if is_iso {
            if !self.config.volumes.iter().any(|v| v == &file) {
                return Err(fail(500, format!("volume '{file}' does not exist")));
            }
            return Ok(value.to_string());
        }
        if rest == "cloudinit" {
            items[i] = (None, format!("{storage}:vm-{vmid}-cloudinit"));
            if prop(&items, "media").is_none() {
                items.push((Some("media".into()), "cdrom".into()));
            }
            return Ok(join_props(&items));
        }
        if let Ok(gib) = rest.parse::<f64>() {
            // New volume: STORAGE:SIZE_IN_GiB.
            self.check_volume_storage(kind, key, storage)?;
            let marker = format!("-{vmid}-disk-");
            let n = self.guests.get(&vmid).map_or(0, |g| {
                g.config
                    .values()
                    .filter(|v| v.as_str().is_some_and(|s| s.contains(&marker)))
                    .count()
            });
            let name = if kind == "lxc" {
                format!("subvol-{vmid}-disk-{n}")
            } else {
                format!("vm-{vmid}-disk-{n}")
            };
            items[i] = (None, format!("{storage}:{name}"));
            items.retain(|(k, _)| k.as_deref() != Some("size"));
            items.push((Some("size".into()), size_string((gib * (1u64 << 30) as f64) as u64)));
            return Ok(join_props(&items));
        }
        // An existing volume: keep the recorded size (only resize changes it).
        if let Some(cur) = existing {
            let cur_items = split_props(cur);
            if let Some(size) = prop(&cur_items, "size") {
                items.retain(|(k, _)| k.as_deref() != Some("size"));
                items.push((Some("size".into()), size.to_string()));
            }
        }
        Ok(join_props(&items))
    }

    /// A NIC: a MAC when none is given, the model checked, the bridge on a running guest.
    fn materialize_nic(&mut self, kind: &str, vmid: u32, key: &str, value: &str) -> Result<String, SimError> {
        let mut items = split_props(value);
        if kind == "qemu" {
            let model_idx = items.iter().position(|(k, v)| match k {
                None => NIC_MODELS.contains(&v.as_str()),
                Some(k) => NIC_MODELS.contains(&k.as_str()) || k == "model",
            });
            match model_idx {
                Some(i) => {
                    let (k, v) = items[i].clone();
                    let (model, mac) = match k.as_deref() {
                        None => (v, None),
                        Some("model") => (v, prop(&items, "macaddr").map(str::to_string)),
                        Some(m) => (m.to_string(), Some(v)),
                    };
                    let mac = match mac {
                        Some(m) => m,
                        None => self.new_mac(),
                    };
                    items.retain(|(k, _)| k.as_deref() != Some("macaddr"));
                    let i = items
                        .iter()
                        .position(|(k, v)| {
                            k.as_deref() == Some(model.as_str()) || (k.is_none() && v == &model) || k.as_deref() == Some("model")
                        })
                        .unwrap_or(0);
                    items[i] = (Some(model), mac.to_uppercase());
                }
                None => {
                    return Err(param_fail(
                        key,
                        "invalid format - property model: property is missing and it is not optional",
                    ));
                }
            }
        } else if prop(&items, "hwaddr").is_none() {
            let mac = self.new_mac();
            items.push((Some("hwaddr".into()), mac));
        }
        // PVE plugs a NIC into its bridge when the guest starts; only a
        // running guest (hot-plug) finds out at config time.
        let running = self.guests.get(&vmid).is_some_and(|g| g.running);
        if let Some(bridge) = prop(&items, "bridge")
            && running
            && !self.config.bridges.iter().any(|b| b == bridge)
        {
            return Err(fail(500, format!("bridge '{bridge}' does not exist")));
        }
        Ok(join_props(&items))
    }

    /// Write config keys as PVE does: hot keys now, others pending while running.
    pub(super) fn write_config(&mut self, node: &str, kind: &str, vmid: u32, params: &BTreeMap<String, String>) -> Result<(), SimError> {
        const META: &[&str] = &[
            "node",
            "vmid",
            "delete",
            "digest",
            "revert",
            "skiplock",
            "background_delay",
            "force",
        ];
        let g = self.guest_mut(node, kind, vmid)?;
        Self::unlocked(g)?;
        if g.template {
            return Err(fail(500, "you can't change the configuration of a template"));
        }
        let running = g.running;
        let current = g.config.clone();
        let mut writes = Vec::new();
        for (k, v) in params {
            if META.contains(&k.as_str()) {
                continue;
            }
            let existing = current
                .get(k)
                .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
            let value = self.materialize(kind, vmid, k, v, existing.as_deref())?;
            writes.push((k.clone(), value, existing.is_none()));
        }
        let g = self.guests.get_mut(&vmid).expect("checked above");
        if let Some(list) = params.get("delete") {
            for k in list.split([',', ';', ' ']).filter(|s| !s.is_empty()) {
                if running && !is_hot(kind, k, false) {
                    g.pending_delete.insert(k.to_string());
                } else {
                    g.config.remove(k);
                }
            }
        }
        for (k, v, new_slot) in writes {
            if running && !is_hot(kind, &k, new_slot) {
                if g.config
                    .get(&k)
                    .map(|c| c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string()))
                    == Some(v.clone())
                {
                    g.pending.remove(&k);
                } else {
                    g.pending.insert(k, v);
                }
            } else {
                g.pending.remove(&k);
                let tv = typed_value(kind, &k, &v);
                g.config.insert(k, tv);
            }
        }
        Ok(())
    }

    pub(super) fn create(
        &mut self,
        node: &str,
        kind: &str,
        params: &BTreeMap<String, String>,
        failure: Option<String>,
    ) -> Result<Value, SimError> {
        self.check_node(node)?;
        self.check_pool(params)?;
        let vmid: u32 = params
            .get("vmid")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| param_fail("vmid", "property is missing and it is not optional"))?;
        if self.guests.contains_key(&vmid) {
            return Err(param_fail("vmid", format!("VM {vmid} already exists")));
        }
        if super::restore::is_restore(kind, params) {
            return self.restore(node, kind, vmid, params, failure);
        }
        if kind == "lxc" {
            let tmpl = params.get("ostemplate").cloned().unwrap_or_default();
            if !self.config.volumes.iter().any(|v| v == &tmpl) {
                return Err(fail(500, format!("volume '{tmpl}' does not exist")));
            }
        }
        const CREATE_ONLY: &[&str] = &[
            "node",
            "vmid",
            "ostemplate",
            "start",
            "pool",
            "password",
            "ssh-public-keys",
            "storage",
            "unique",
            "archive",
            "force",
        ];
        let mut config = BTreeMap::new();
        let mut g = SimGuest::new(vmid, kind, node, BTreeMap::new(), false);
        g.lock = Some("create".into());
        g.pool = params.get("pool").cloned();
        self.guests.insert(vmid, g);
        // PVE allocates the root disk first (disk-0), then the other volumes.
        let mut ordered: Vec<(&String, &String)> = params.iter().collect();
        ordered.sort_by_key(|(k, _)| (k.as_str() != "rootfs", k.as_str() != "scsi0"));
        for (k, v) in ordered {
            if CREATE_ONLY.contains(&k.as_str()) {
                continue;
            }
            match self.materialize(kind, vmid, k, v, None) {
                Ok(val) => {
                    config.insert(k.clone(), typed_value(kind, k, &val));
                    self.guests.get_mut(&vmid).expect("inserted").config = config.clone();
                }
                Err(e) => {
                    self.guests.remove(&vmid);
                    return Err(e);
                }
            }
        }
        created_defaults(kind, vmid, params, &mut config);
        let g = self.guests.get_mut(&vmid).expect("inserted");
        g.config = config;
        let task = if kind == "lxc" { "vzcreate" } else { "qmcreate" };
        Ok(self.start_task(node, task, &vmid.to_string(), Effect::Created(vmid), failure))
    }

    pub(super) fn clone_guest(
        &mut self,
        node: &str,
        kind: &str,
        src: u32,
        params: &BTreeMap<String, String>,
        failure: Option<String>,
    ) -> Result<Value, SimError> {
        let newid: u32 = params.get("newid").and_then(|v| v.parse().ok()).unwrap_or(0);
        self.check_pool(params)?;
        let source = self.guest_mut(node, kind, src)?.clone();
        Self::unlocked(&source)?;
        if self.guests.contains_key(&newid) {
            return Err(fail(500, format!("unable to create VM {newid}: config file already exists")));
        }
        let full = params.get("full").map(|v| v == "1").unwrap_or(!source.template);
        if !full && !source.template {
            return Err(fail(500, "linked clone feature is not supported for a VM that is not a template"));
        }
        if let Some(storage) = params.get("storage") {
            if !full {
                return Err(fail(500, "parameter 'storage' not allowed for linked clones"));
            }
            self.check_volume_storage(kind, "storage", storage)?;
        }
        let target = params.get("target").cloned().unwrap_or_else(|| node.to_string());
        self.check_node(&target)?;
        let mut config = BTreeMap::new();
        for (k, v) in &source.config {
            if k == "template" || k == "meta" || k == "vmgenid" {
                continue;
            }
            let mut v = v.clone();
            if let Some(s) = v.as_str() {
                let s = s
                    .replace(&format!("base-{src}-"), &format!("vm-{newid}-"))
                    .replace(&format!("vm-{src}-"), &format!("vm-{newid}-"));
                let s = match params.get("storage") {
                    Some(st) if is_disk_key(kind, k) && !s.contains("media=cdrom") => {
                        s.split_once(':').map_or(s.clone(), |(_, rest)| format!("{st}:{rest}"))
                    }
                    _ => s,
                };
                v = json!(s);
            }
            config.insert(k.clone(), v);
        }
        for (k, v) in config.clone() {
            if k.starts_with("net") && kind == "qemu" {
                let items: Vec<_> = split_props(v.as_str().unwrap_or_default())
                    .into_iter()
                    .map(|(k, v)| match k {
                        Some(m) if NIC_MODELS.contains(&m.as_str()) => (Some(m), self.new_mac()),
                        other => (other, v),
                    })
                    .collect();
                config.insert(k, json!(join_props(&items)));
            }
        }
        if let Some(name) = params.get("name") {
            config.insert(if kind == "lxc" { "hostname" } else { "name" }.into(), json!(name));
        }
        match params.get("description") {
            Some(d) => config.insert("description".into(), json!(format!("{d}\n"))),
            None => config.remove("description"),
        };
        let mut g = SimGuest::new(newid, kind, &target, config, false);
        g.lock = Some("clone".into());
        g.pool = params.get("pool").cloned();
        self.guests.insert(newid, g);
        let task = if kind == "lxc" { "vzclone" } else { "qmclone" };
        Ok(self.start_task(node, task, &src.to_string(), Effect::Created(newid), failure))
    }

    /// PVE checks the pool before anything else (RPCEnvironment::check_pool_exist).
    fn check_pool(&self, params: &BTreeMap<String, String>) -> Result<(), SimError> {
        match params.get("pool") {
            Some(p) if !self.config.pools.contains(p) => Err(fail(403, format!("Permission check failed (pool '{p}' does not exist)"))),
            _ => Ok(()),
        }
    }
}

/// What PVE adds to a new guest's config by itself.
fn created_defaults(kind: &str, vmid: u32, params: &BTreeMap<String, String>, config: &mut BTreeMap<String, Value>) {
    if kind == "lxc" {
        config.insert("arch".into(), json!("amd64"));
        let os = params
            .get("ostemplate")
            .and_then(|t| t.split('/').nth(1))
            .and_then(|f| f.split('-').next())
            .unwrap_or("debian");
        config.insert("ostype".into(), json!(os));
        config.entry("unprivileged".into()).or_insert(json!(1));
    } else {
        config
            .entry("meta".into())
            .or_insert(json!(format!("creation-qemu=10.0.2,ctime={}", now_epoch())));
        config
            .entry("smbios1".into())
            .or_insert(json!(format!("uuid=00000000-0000-4000-8000-{vmid:012}")));
    }
}
