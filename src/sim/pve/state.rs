//! The simulated cluster's state and the behaviour of each call.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};

use super::PveSimConfig;

#[derive(Clone, Debug)]
pub struct SimNode {
    pub name: String,
    pub maxmem: u64,
    /// Memory used by the host itself; running guests add theirs.
    pub basemem: u64,
    pub online: bool,
}

#[derive(Clone, Debug)]
pub struct SimGuest {
    pub vmid: u32,
    /// `qemu` or `lxc`.
    pub kind: String,
    pub node: String,
    pub config: BTreeMap<String, Value>,
    pub pending: BTreeMap<String, String>,
    pub pending_delete: BTreeSet<String>,
    pub running: bool,
    pub lock: Option<String>,
    pub template: bool,
    pub snapshots: BTreeMap<String, (BTreeMap<String, Value>, u64)>,
    pub fw_options: BTreeMap<String, Value>,
    pub fw_rules: Vec<BTreeMap<String, Value>>,
}

impl SimGuest {
    pub fn new(vmid: u32, kind: &str, node: &str, config: BTreeMap<String, Value>, template: bool) -> Self {
        Self {
            vmid,
            kind: kind.into(),
            node: node.into(),
            config,
            pending: BTreeMap::new(),
            pending_delete: BTreeSet::new(),
            running: false,
            lock: None,
            template,
            snapshots: BTreeMap::new(),
            fw_options: BTreeMap::new(),
            fw_rules: Vec::new(),
        }
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.config.get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    fn what(&self) -> &'static str {
        if self.kind == "lxc" { "CT" } else { "VM" }
    }

    fn memory_bytes(&self) -> u64 {
        let mib: u64 = self
            .get("memory")
            .and_then(|m| m.split(',').next().map(|s| s.trim_start_matches("current=").to_string()))
            .and_then(|m| m.parse().ok())
            .unwrap_or(512);
        mib << 20
    }

    fn tags(&self) -> Option<String> {
        self.get("tags")
    }

    /// Pending changes become current (on start/reboot).
    fn apply_pending(&mut self) {
        for (k, v) in std::mem::take(&mut self.pending) {
            self.config.insert(k.clone(), typed_value(&self.kind, &k, &v));
        }
        for k in std::mem::take(&mut self.pending_delete) {
            self.config.remove(&k);
        }
    }
}

pub enum SimError {
    Status(u16, String),
    Params(BTreeMap<String, String>),
}

fn fail(code: u16, msg: impl Into<String>) -> SimError {
    SimError::Status(code, msg.into())
}

fn param_fail(key: &str, msg: impl Into<String>) -> SimError {
    SimError::Params(BTreeMap::from([(key.to_string(), msg.into())]))
}

#[derive(Clone, Debug)]
enum Effect {
    Created(u32),
    Start(u32),
    Stop(u32),
    Reboot(u32),
    Delete(u32),
    Resize { vmid: u32, disk: String, bytes: u64 },
    Snapshot { vmid: u32, name: String },
    DeleteSnapshot { vmid: u32, name: String },
    Rollback { vmid: u32, name: String },
}

struct Task {
    upid: String,
    node: String,
    task_type: String,
    id: String,
    pid: u32,
    pstart: u32,
    starttime: u64,
    done_at: Instant,
    failure: Option<String>,
    effect: Effect,
    exitstatus: Option<String>,
}

pub struct State {
    pub config: PveSimConfig,
    pub guests: BTreeMap<u32, SimGuest>,
    tasks: Vec<Task>,
    next_pid: u32,
    next_mac: u32,
}

/// Keys PVE types as integers (JSON numbers) in a config answer; all others are strings.
fn typed_value(kind: &str, key: &str, v: &str) -> Value {
    const QEMU_INT: &[&str] = &[
        "cores",
        "sockets",
        "balloon",
        "onboot",
        "protection",
        "numa",
        "template",
        "vcpus",
        "cpuunits",
        "acpi",
        "kvm",
        "tablet",
    ];
    const LXC_INT: &[&str] = &[
        "cores",
        "memory",
        "swap",
        "onboot",
        "protection",
        "unprivileged",
        "template",
        "cpuunits",
        "tty",
        "console",
    ];
    let ints = if kind == "lxc" { LXC_INT } else { QEMU_INT };
    match (ints.contains(&key), v.parse::<i64>()) {
        (true, Ok(n)) => json!(n),
        _ => json!(v),
    }
}

/// Keys a running guest takes at once; everything else waits in `pending` for a reboot.
fn is_hot(kind: &str, key: &str, new_slot: bool) -> bool {
    const COMMON: &[&str] = &["name", "description", "tags", "onboot", "startup", "protection", "lock"];
    if COMMON.contains(&key) {
        return true;
    }
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    match kind {
        "qemu" => key == "balloon" || base == "net" || (new_slot && matches!(base, "scsi" | "virtio" | "sata")),
        _ => matches!(key, "memory" | "swap" | "cores" | "cpulimit" | "cpuunits") || base == "net" || (new_slot && base == "mp"),
    }
}

fn is_disk_key(kind: &str, key: &str) -> bool {
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    match kind {
        "qemu" => matches!(base, "scsi" | "virtio" | "sata" | "ide" | "efidisk" | "tpmstate") && base.len() < key.len(),
        _ => key == "rootfs" || (base == "mp" && base.len() < key.len()),
    }
}

fn now_epoch() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn size_string(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{}G", bytes >> 30)
    } else {
        format!("{}M", bytes >> 20)
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().ok()?;
    let mul: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    Some((n * mul as f64) as u64)
}

fn split_props(s: &str) -> Vec<(Option<String>, String)> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (Some(k.to_string()), v.to_string()),
            None => (None, p.to_string()),
        })
        .collect()
}

fn join_props(items: &[(Option<String>, String)]) -> String {
    items
        .iter()
        .map(|(k, v)| k.as_ref().map_or(v.clone(), |k| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(",")
}

fn prop<'a>(items: &'a [(Option<String>, String)], key: &str) -> Option<&'a str> {
    items.iter().find(|(k, _)| k.as_deref() == Some(key)).map(|(_, v)| v.as_str())
}

const NIC_MODELS: &[&str] = &["virtio", "e1000", "e1000e", "rtl8139", "vmxnet3"];

impl State {
    pub fn new(config: PveSimConfig) -> Self {
        Self {
            config,
            guests: BTreeMap::new(),
            tasks: Vec::new(),
            next_pid: 0x3F000,
            next_mac: 1,
        }
    }

    pub fn insert_guest(&mut self, g: SimGuest) {
        self.guests.insert(g.vmid, g);
    }

    /// Let every running task finish now (tests that want exact control use long tasks).
    pub fn finish_tasks(&mut self) {
        let now = Instant::now();
        for t in self.tasks.iter_mut().filter(|t| t.exitstatus.is_none()) {
            t.done_at = now;
        }
        self.advance();
    }

    /// Finish every task whose time has come, applying its effect.
    pub fn advance(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| self.tasks[i].exitstatus.is_none() && self.tasks[i].done_at <= now)
            .collect();
        for i in due {
            let effect = self.tasks[i].effect.clone();
            let failure = self.tasks[i].failure.clone().or_else(|| self.effect_failure(&effect));
            match &failure {
                Some(msg) => {
                    if let Effect::Created(vmid) = effect {
                        self.guests.remove(&vmid);
                    } else {
                        self.unlock(&effect);
                    }
                    self.tasks[i].exitstatus = Some(msg.clone());
                }
                None => {
                    self.apply_effect(effect);
                    self.tasks[i].exitstatus = Some("OK".into());
                }
            }
        }
    }

    /// Failures that depend on the state when the task runs (as PVE checks them in the worker).
    fn effect_failure(&self, e: &Effect) -> Option<String> {
        let g = |vmid: &u32| self.guests.get(vmid);
        match e {
            Effect::Start(v) => g(v).filter(|g| g.running).map(|g| format!("{} {v} already running", g.what())),
            Effect::Stop(v) | Effect::Reboot(v) => g(v).filter(|g| !g.running).map(|g| format!("{} {v} not running", g.what())),
            _ => None,
        }
    }

    fn unlock(&mut self, e: &Effect) {
        let vmid = match e {
            Effect::Created(v) | Effect::Delete(v) => *v,
            Effect::Resize { vmid, .. }
            | Effect::Snapshot { vmid, .. }
            | Effect::DeleteSnapshot { vmid, .. }
            | Effect::Rollback { vmid, .. } => *vmid,
            _ => return,
        };
        if let Some(g) = self.guests.get_mut(&vmid) {
            g.lock = None;
        }
    }

    fn apply_effect(&mut self, e: Effect) {
        self.unlock(&e);
        match e {
            Effect::Created(_) => {}
            Effect::Start(v) => {
                if let Some(g) = self.guests.get_mut(&v) {
                    g.apply_pending();
                    g.running = true;
                }
            }
            Effect::Stop(v) => {
                if let Some(g) = self.guests.get_mut(&v) {
                    g.running = false;
                }
            }
            Effect::Reboot(v) => {
                if let Some(g) = self.guests.get_mut(&v) {
                    g.apply_pending();
                }
            }
            Effect::Delete(v) => {
                self.guests.remove(&v);
            }
            Effect::Resize { vmid, disk, bytes } => {
                if let Some(g) = self.guests.get_mut(&vmid)
                    && let Some(cur) = g.get(&disk)
                {
                    let mut items = split_props(&cur);
                    items.retain(|(k, _)| k.as_deref() != Some("size"));
                    items.push((Some("size".into()), size_string(bytes)));
                    g.config.insert(disk, json!(join_props(&items)));
                }
            }
            Effect::Snapshot { vmid, name } => {
                if let Some(g) = self.guests.get_mut(&vmid) {
                    let cfg = g.config.clone();
                    g.snapshots.insert(name, (cfg, now_epoch()));
                }
            }
            Effect::DeleteSnapshot { vmid, name } => {
                if let Some(g) = self.guests.get_mut(&vmid) {
                    g.snapshots.remove(&name);
                }
            }
            Effect::Rollback { vmid, name } => {
                if let Some(g) = self.guests.get_mut(&vmid)
                    && let Some((cfg, _)) = g.snapshots.get(&name).cloned()
                {
                    g.config = cfg;
                    g.pending.clear();
                    g.pending_delete.clear();
                    g.running = false;
                }
            }
        }
    }

    fn start_task(&mut self, node: &str, task_type: &str, id: &str, effect: Effect, failure: Option<String>) -> Value {
        self.next_pid += 1;
        let starttime = now_epoch();
        let pstart = 0x01B3_0000 + self.next_pid;
        let user = self.config.token_id.clone();
        let upid = format!(
            "UPID:{node}:{:08X}:{:08X}:{:08X}:{task_type}:{id}:{user}:",
            self.next_pid, pstart, starttime
        );
        self.tasks.push(Task {
            upid: upid.clone(),
            node: node.into(),
            task_type: task_type.into(),
            id: id.into(),
            pid: self.next_pid,
            pstart,
            starttime,
            done_at: Instant::now() + self.config.task_duration,
            failure,
            effect,
            exitstatus: None,
        });
        json!(upid)
    }

    fn new_mac(&mut self) -> String {
        self.next_mac += 1;
        let n = self.next_mac;
        format!("BC:24:11:{:02X}:{:02X}:{:02X}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
    }

    fn check_node(&self, node: &str) -> Result<(), SimError> {
        match self.config.nodes.iter().find(|n| n.name == node) {
            None => Err(fail(
                500,
                format!("hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"),
            )),
            Some(n) if !n.online => Err(fail(595, "No route to host")),
            Some(_) => Ok(()),
        }
    }

    fn conf_path(kind: &str, node: &str, vmid: u32) -> String {
        if kind == "lxc" {
            format!("nodes/{node}/lxc/{vmid}.conf")
        } else {
            format!("nodes/{node}/qemu-server/{vmid}.conf")
        }
    }

    /// The guest at this node/kind/vmid, or PVE's "does not exist" error.
    fn guest_mut(&mut self, node: &str, kind: &str, vmid: u32) -> Result<&mut SimGuest, SimError> {
        self.check_node(node)?;
        match self.guests.get_mut(&vmid) {
            Some(g) if g.node == node && g.kind == kind => Ok(g),
            _ => Err(fail(
                500,
                format!("Configuration file '{}' does not exist", Self::conf_path(kind, node, vmid)),
            )),
        }
    }

    fn unlocked(g: &SimGuest) -> Result<(), SimError> {
        match &g.lock {
            Some(l) => Err(fail(500, format!("{} is locked ({l})", g.what()))),
            None => Ok(()),
        }
    }

    /// Turn the allocation syntax `STORAGE:SIZE` into a volume and check storages/volumes exist.
    fn materialize(&mut self, kind: &str, vmid: u32, key: &str, value: &str, existing: Option<&str>) -> Result<String, SimError> {
        let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
        if is_disk_key(kind, key) {
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
            if !self.config.storages.iter().any(|s| s == storage) {
                return Err(fail(500, format!("storage '{storage}' does not exist")));
            }
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
            return Ok(join_props(&items));
        }
        if base == "net" && base.len() < key.len() {
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
            if let Some(bridge) = prop(&items, "bridge")
                && !self.config.bridges.iter().any(|b| b == bridge)
            {
                return Err(fail(500, format!("bridge '{bridge}' does not exist")));
            }
            return Ok(join_props(&items));
        }
        if kind == "qemu" && key == "cipassword" {
            return Ok("**********".into());
        }
        Ok(value.to_string())
    }

    /// Write config keys as PVE does: hot keys now, others pending while running.
    fn write_config(&mut self, node: &str, kind: &str, vmid: u32, params: &BTreeMap<String, String>) -> Result<(), SimError> {
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

    fn create(&mut self, node: &str, kind: &str, params: &BTreeMap<String, String>, failure: Option<String>) -> Result<Value, SimError> {
        self.check_node(node)?;
        let vmid: u32 = params
            .get("vmid")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| param_fail("vmid", "property is missing and it is not optional"))?;
        if self.guests.contains_key(&vmid) {
            return Err(param_fail("vmid", format!("VM {vmid} already exists")));
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
        let g = self.guests.get_mut(&vmid).expect("inserted");
        g.config = config;
        let task = if kind == "lxc" { "vzcreate" } else { "qmcreate" };
        Ok(self.start_task(node, task, &vmid.to_string(), Effect::Created(vmid), failure))
    }

    fn clone_guest(
        &mut self,
        node: &str,
        kind: &str,
        src: u32,
        params: &BTreeMap<String, String>,
        failure: Option<String>,
    ) -> Result<Value, SimError> {
        let newid: u32 = params.get("newid").and_then(|v| v.parse().ok()).unwrap_or(0);
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
            if !self.config.storages.contains(storage) {
                return Err(fail(500, format!("storage '{storage}' does not exist")));
            }
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
        self.guests.insert(newid, g);
        let task = if kind == "lxc" { "vzclone" } else { "qmclone" };
        Ok(self.start_task(node, task, &src.to_string(), Effect::Created(newid), failure))
    }

    pub fn dispatch(
        &mut self,
        method: &str,
        template: &str,
        p: &BTreeMap<String, String>,
        failure: Option<String>,
    ) -> Result<Value, SimError> {
        let node = p.get("node").cloned().unwrap_or_default();
        let vmid: u32 = p.get("vmid").and_then(|v| v.parse().ok()).unwrap_or(0);
        let kind = if template.contains("/lxc") { "lxc" } else { "qemu" };
        let t = template.replace("/lxc", "/{kind}").replace("/qemu", "/{kind}");
        match (method, t.as_str()) {
            ("GET", "/version") => Ok(json!({"version": "9.1.1", "release": "9.1", "repoid": "a1b2c3d4"})),
            ("GET", "/cluster/resources") => Ok(self.cluster_resources(p.get("type").map(String::as_str))),
            ("GET", "/cluster/nextid") => self.next_id(p.get("vmid")),
            ("GET", "/nodes") => Ok(self.nodes()),
            ("GET", "/nodes/{node}/tasks/{upid}/status") => self.task_status(&node, p.get("upid").map(String::as_str).unwrap_or("")),
            ("GET", "/nodes/{node}/tasks/{upid}/log") => {
                let st = self.task_status(&node, p.get("upid").map(String::as_str).unwrap_or(""))?;
                let last = match st["exitstatus"].as_str() {
                    None => vec![],
                    Some("OK") => vec![json!({"n": 2, "t": "TASK OK"})],
                    Some(e) => vec![json!({"n": 2, "t": format!("TASK ERROR: {e}")})],
                };
                Ok(Value::Array([vec![json!({"n": 1, "t": "starting task"})], last].concat()))
            }
            ("POST", "/nodes/{node}/{kind}") => self.create(&node, kind, p, failure),
            ("POST", "/nodes/{node}/{kind}/{vmid}/clone") => self.clone_guest(&node, kind, vmid, p, failure),
            ("GET", "/nodes/{node}/{kind}/{vmid}/config") => {
                let current = p.get("current").is_some_and(|v| v == "1");
                let g = self.guest_mut(&node, kind, vmid)?;
                let mut cfg = g.config.clone();
                if !current {
                    for (k, v) in &g.pending {
                        cfg.insert(k.clone(), typed_value(kind, k, v));
                    }
                }
                let mut out = serde_json::Map::from_iter(cfg);
                out.insert("digest".into(), json!(format!("{:040x}", out.len() as u64 * 7919 + vmid as u64)));
                if let Some(l) = &g.lock {
                    out.insert("lock".into(), json!(l));
                }
                Ok(Value::Object(out))
            }
            ("GET", "/nodes/{node}/{kind}/{vmid}/pending") => {
                let g = self.guest_mut(&node, kind, vmid)?;
                let mut keys: BTreeSet<&String> = g.config.keys().collect();
                keys.extend(g.pending.keys());
                keys.extend(g.pending_delete.iter());
                Ok(Value::Array(
                    keys.into_iter()
                        .map(|k| {
                            let mut e = serde_json::Map::new();
                            e.insert("key".into(), json!(k));
                            if let Some(v) = g.config.get(k) {
                                e.insert("value".into(), v.clone());
                            }
                            if let Some(v) = g.pending.get(k) {
                                e.insert("pending".into(), typed_value(kind, k, v));
                            }
                            if g.pending_delete.contains(k) {
                                e.insert("delete".into(), json!(1));
                            }
                            Value::Object(e)
                        })
                        .collect(),
                ))
            }
            ("POST", "/nodes/{node}/{kind}/{vmid}/config") | ("PUT", "/nodes/{node}/{kind}/{vmid}/config") => {
                self.write_config(&node, kind, vmid, p)?;
                Ok(Value::Null)
            }
            ("PUT", "/nodes/{node}/{kind}/{vmid}/resize") => {
                let disk = p.get("disk").cloned().unwrap_or_default();
                let size = p.get("size").cloned().unwrap_or_default();
                let g = self.guest_mut(&node, kind, vmid)?;
                Self::unlocked(g)?;
                let Some(cur) = g.get(&disk) else {
                    return Err(fail(500, format!("disk '{disk}' does not exist")));
                };
                let cur_bytes = prop(&split_props(&cur), "size").and_then(parse_size).unwrap_or(0);
                let new_bytes = match size.strip_prefix('+') {
                    Some(delta) => cur_bytes + parse_size(delta).unwrap_or(0),
                    None => parse_size(&size).unwrap_or(0),
                };
                if new_bytes < cur_bytes {
                    return Err(fail(500, "shrinking disks is not supported"));
                }
                Ok(self.start_task(
                    &node,
                    "resize",
                    &vmid.to_string(),
                    Effect::Resize {
                        vmid,
                        disk,
                        bytes: new_bytes,
                    },
                    failure,
                ))
            }
            ("GET", "/nodes/{node}/{kind}/{vmid}/status/current") => {
                let g = self.guest_mut(&node, kind, vmid)?;
                let mut out = json!({
                    "vmid": vmid, "status": if g.running { "running" } else { "stopped" },
                    "name": g.get("name").or_else(|| g.get("hostname")), "maxmem": g.memory_bytes(), "cpus": 1,
                    "uptime": if g.running { 3600 } else { 0 }, "ha": {"managed": 0},
                });
                if let Some(l) = &g.lock {
                    out["lock"] = json!(l);
                }
                if kind == "qemu" {
                    out["qmpstatus"] = json!(if g.running { "running" } else { "stopped" });
                }
                Ok(out)
            }
            ("POST", "/nodes/{node}/{kind}/{vmid}/status/start")
            | ("POST", "/nodes/{node}/{kind}/{vmid}/status/stop")
            | ("POST", "/nodes/{node}/{kind}/{vmid}/status/shutdown")
            | ("POST", "/nodes/{node}/{kind}/{vmid}/status/reboot") => {
                let action = t.rsplit('/').next().unwrap_or_default();
                let g = self.guest_mut(&node, kind, vmid)?;
                Self::unlocked(g)?;
                if g.template {
                    return Err(fail(500, "you can't start a VM if it's a template"));
                }
                let (effect, verb) = match action {
                    "start" => (Effect::Start(vmid), "start"),
                    "reboot" => (Effect::Reboot(vmid), "reboot"),
                    "shutdown" => (Effect::Stop(vmid), "shutdown"),
                    _ => (Effect::Stop(vmid), "stop"),
                };
                let prefix = if kind == "lxc" { "vz" } else { "qm" };
                Ok(self.start_task(&node, &format!("{prefix}{verb}"), &vmid.to_string(), effect, failure))
            }
            ("DELETE", "/nodes/{node}/{kind}/{vmid}") => {
                let g = self.guest_mut(&node, kind, vmid)?;
                Self::unlocked(g)?;
                if g.get("protection").as_deref() == Some("1") {
                    return Err(fail(500, format!("can't remove {} {vmid} - protection mode enabled", g.what())));
                }
                if g.running {
                    return Err(fail(500, format!("{} {vmid} is running - destroy failed", g.what())));
                }
                g.lock = Some("destroyed".into());
                let task = if kind == "lxc" { "vzdestroy" } else { "qmdestroy" };
                Ok(self.start_task(&node, task, &vmid.to_string(), Effect::Delete(vmid), failure))
            }
            ("GET", "/nodes/{node}/{kind}/{vmid}/snapshot") => {
                let g = self.guest_mut(&node, kind, vmid)?;
                let mut list: Vec<Value> = g
                    .snapshots
                    .iter()
                    .map(|(n, (_, t))| json!({"name": n, "snaptime": t, "description": ""}))
                    .collect();
                list.push(json!({"name": "current", "description": "You are here!", "running": g.running as u8}));
                Ok(Value::Array(list))
            }
            ("POST", "/nodes/{node}/{kind}/{vmid}/snapshot") => {
                let name = p.get("snapname").cloned().unwrap_or_default();
                let g = self.guest_mut(&node, kind, vmid)?;
                Self::unlocked(g)?;
                if g.snapshots.contains_key(&name) {
                    return Err(fail(500, format!("snapshot name '{name}' already used")));
                }
                g.lock = Some("snapshot".into());
                let task = if kind == "lxc" { "vzsnapshot" } else { "qmsnapshot" };
                Ok(self.start_task(&node, task, &vmid.to_string(), Effect::Snapshot { vmid, name }, failure))
            }
            ("DELETE", "/nodes/{node}/{kind}/{vmid}/snapshot/{snapname}")
            | ("POST", "/nodes/{node}/{kind}/{vmid}/snapshot/{snapname}/rollback") => {
                let name = p.get("snapname").cloned().unwrap_or_default();
                let g = self.guest_mut(&node, kind, vmid)?;
                Self::unlocked(g)?;
                if !g.snapshots.contains_key(&name) {
                    return Err(fail(500, format!("snapshot '{name}' does not exist")));
                }
                let rollback = method == "POST";
                g.lock = Some(if rollback { "rollback" } else { "snapshot-delete" }.into());
                let prefix = if kind == "lxc" { "vz" } else { "qm" };
                let (task, effect) = if rollback {
                    (format!("{prefix}rollback"), Effect::Rollback { vmid, name })
                } else {
                    (format!("{prefix}delsnapshot"), Effect::DeleteSnapshot { vmid, name })
                };
                Ok(self.start_task(&node, &task, &vmid.to_string(), effect, failure))
            }
            ("GET", "/nodes/{node}/{kind}/{vmid}/firewall/options") => {
                let g = self.guest_mut(&node, kind, vmid)?;
                let mut out = serde_json::Map::from_iter(g.fw_options.clone());
                out.insert("digest".into(), json!("0000000000000000000000000000000000000000"));
                Ok(Value::Object(out))
            }
            ("PUT", "/nodes/{node}/{kind}/{vmid}/firewall/options") => {
                let g = self.guest_mut(&node, kind, vmid)?;
                for (k, v) in p {
                    if matches!(k.as_str(), "node" | "vmid" | "digest" | "delete") {
                        continue;
                    }
                    let val = if v.parse::<i64>().is_ok() && k != "policy_in" {
                        json!(v.parse::<i64>().unwrap())
                    } else {
                        json!(v)
                    };
                    g.fw_options.insert(k.clone(), val);
                }
                if let Some(list) = p.get("delete") {
                    for k in list.split(',') {
                        g.fw_options.remove(k);
                    }
                }
                Ok(Value::Null)
            }
            ("GET", "/nodes/{node}/{kind}/{vmid}/firewall/rules") => {
                let g = self.guest_mut(&node, kind, vmid)?;
                Ok(Value::Array(
                    g.fw_rules
                        .iter()
                        .enumerate()
                        .map(|(i, r)| {
                            let mut r = serde_json::Map::from_iter(r.clone());
                            r.insert("pos".into(), json!(i));
                            r.insert("ipversion".into(), json!(4));
                            Value::Object(r)
                        })
                        .collect(),
                ))
            }
            ("POST", "/nodes/{node}/{kind}/{vmid}/firewall/rules") => {
                check_firewall_rule(p)?;
                let g = self.guest_mut(&node, kind, vmid)?;
                let mut rule = BTreeMap::new();
                for (k, v) in p {
                    if matches!(k.as_str(), "node" | "vmid" | "digest" | "pos") {
                        continue;
                    }
                    let val = if k == "enable" || k == "log" {
                        json!(v.parse::<i64>().unwrap_or(0))
                    } else {
                        json!(v)
                    };
                    rule.insert(k.clone(), val);
                }
                // pve-firewall puts a new rule first, then moves it to `pos` when given.
                let pos = p
                    .get("pos")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0)
                    .min(g.fw_rules.len());
                g.fw_rules.insert(pos, rule);
                Ok(Value::Null)
            }
            ("DELETE", "/nodes/{node}/{kind}/{vmid}/firewall/rules/{pos}") => {
                let pos: usize = p.get("pos").and_then(|v| v.parse().ok()).unwrap_or(usize::MAX);
                let g = self.guest_mut(&node, kind, vmid)?;
                if pos >= g.fw_rules.len() {
                    return Err(fail(500, format!("no rule at position {pos}")));
                }
                g.fw_rules.remove(pos);
                Ok(Value::Null)
            }
            ("GET", "/nodes/{node}/{kind}/{vmid}/agent/network-get-interfaces") => {
                let g = self.guest_mut(&node, kind, vmid)?;
                if !g.get("agent").is_some_and(|a| a.starts_with('1') || a.contains("enabled=1")) {
                    return Err(fail(500, "No QEMU guest agent configured"));
                }
                if !g.running {
                    return Err(fail(500, format!("VM {vmid} is not running")));
                }
                let mut ifaces = vec![json!({"name": "lo", "hardware-address": "00:00:00:00:00:00",
                    "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}]})];
                for (i, (ip4, ip6)) in guest_addresses(g).into_iter().enumerate() {
                    let mut addrs = vec![json!({"ip-address": ip4, "ip-address-type": "ipv4", "prefix": 24})];
                    if let Some(ip6) = ip6 {
                        addrs.push(json!({"ip-address": ip6, "ip-address-type": "ipv6", "prefix": 64}));
                    }
                    ifaces.push(json!({"name": format!("eth{i}"), "hardware-address": "bc:24:11:00:00:01", "ip-addresses": addrs}));
                }
                Ok(json!({ "result": ifaces }))
            }
            ("GET", "/nodes/{node}/{kind}/{vmid}/interfaces") => {
                let g = self.guest_mut(&node, kind, vmid)?;
                if !g.running {
                    return Err(fail(500, format!("CT {vmid} not running")));
                }
                let mut list = vec![json!({"name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8", "inet6": "::1/128"})];
                for (i, (ip4, ip6)) in guest_addresses(g).into_iter().enumerate() {
                    let mut e = json!({"name": format!("eth{i}"), "hwaddr": "bc:24:11:00:00:02", "inet": format!("{ip4}/24")});
                    if let Some(ip6) = ip6 {
                        e["inet6"] = json!(format!("{ip6}/64"));
                    }
                    list.push(e);
                }
                Ok(Value::Array(list))
            }
            _ => Err(fail(501, format!("Method '{method} {template}' not implemented"))),
        }
    }

    fn cluster_resources(&self, filter: Option<&str>) -> Value {
        let mut out = Vec::new();
        if matches!(filter, None | Some("node")) {
            out.extend(self.nodes().as_array().cloned().unwrap_or_default());
        }
        if matches!(filter, None | Some("vm")) {
            for g in self.guests.values() {
                let mut e = json!({
                    "id": format!("{}/{}", g.kind, g.vmid), "type": g.kind, "vmid": g.vmid,
                    "name": g.get("name").or_else(|| g.get("hostname")), "node": g.node,
                    "status": if g.running { "running" } else { "stopped" }, "template": g.template as u8,
                    "maxmem": g.memory_bytes(), "mem": if g.running { g.memory_bytes() / 3 } else { 0 },
                    "cpu": 0, "maxcpu": 2, "disk": 0, "maxdisk": 0, "uptime": if g.running { 3600 } else { 0 },
                    "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
                });
                if let Some(t) = g.tags() {
                    e["tags"] = json!(t);
                }
                if let Some(l) = &g.lock {
                    e["lock"] = json!(l);
                }
                out.push(e);
            }
        }
        Value::Array(out)
    }

    fn nodes(&self) -> Value {
        Value::Array(
            self.config
                .nodes
                .iter()
                .map(|n| {
                    let used: u64 = self
                        .guests
                        .values()
                        .filter(|g| g.node == n.name && g.running)
                        .map(|g| g.memory_bytes())
                        .sum();
                    json!({
                        "node": n.name, "id": format!("node/{}", n.name), "type": "node",
                        "status": if n.online { "online" } else { "offline" },
                        "mem": n.basemem + used, "maxmem": n.maxmem, "cpu": 0.05, "maxcpu": 16, "uptime": 864000, "level": "",
                    })
                })
                .collect(),
        )
    }

    fn next_id(&self, wanted: Option<&String>) -> Result<Value, SimError> {
        if let Some(w) = wanted {
            let id: u32 = w.parse().unwrap_or(0);
            if self.guests.contains_key(&id) {
                return Err(param_fail("vmid", format!("VM {id} already exists")));
            }
            return Ok(json!(id.to_string()));
        }
        let id = (100u32..).find(|i| !self.guests.contains_key(i)).expect("free id");
        // QUIRK kept on purpose: a string although the schema says integer.
        Ok(json!(id.to_string()))
    }

    fn task_status(&mut self, node: &str, upid: &str) -> Result<Value, SimError> {
        let Some(t) = self.tasks.iter().find(|t| t.upid == upid && t.node == node) else {
            return Err(param_fail("upid", "no such task"));
        };
        let (user, tokenid) = match self.config.token_id.split_once('!') {
            Some((u, t)) => (u.to_string(), Some(t.to_string())),
            None => (self.config.token_id.clone(), None),
        };
        let mut out = json!({
            "upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart, "starttime": t.starttime,
            "type": t.task_type, "id": t.id, "user": user,
            "status": if t.exitstatus.is_some() { "stopped" } else { "running" },
        });
        if let Some(tid) = tokenid {
            out["tokenid"] = json!(tid);
        }
        if let Some(e) = &t.exitstatus {
            out["exitstatus"] = json!(e);
        }
        Ok(out)
    }
}

/// Addresses a guest would get: static ones from its config, a documentation
/// address (TEST-NET-1) standing in for a DHCP lease.
fn guest_addresses(g: &SimGuest) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for i in 0..8 {
        let (ip, ip6) = if g.kind == "qemu" {
            let Some(cfg) = g.get(&format!("ipconfig{i}")) else {
                if i == 0 && g.get("net0").is_some() {
                    out.push((format!("192.0.2.{}", g.vmid % 200 + 10), None));
                }
                continue;
            };
            let items = split_props(&cfg);
            (prop(&items, "ip").map(str::to_string), prop(&items, "ip6").map(str::to_string))
        } else {
            let Some(net) = g.get(&format!("net{i}")) else {
                continue;
            };
            let items = split_props(&net);
            (prop(&items, "ip").map(str::to_string), prop(&items, "ip6").map(str::to_string))
        };
        let v4 = match ip.as_deref() {
            Some(a) if a != "dhcp" => a.split('/').next().unwrap_or_default().to_string(),
            _ => format!("192.0.2.{}", g.vmid % 200 + 10 + i),
        };
        let v6 = ip6
            .filter(|a| a != "dhcp" && a != "auto")
            .map(|a| a.split('/').next().unwrap_or_default().to_string());
        out.push((v4, v6));
    }
    out
}

/// pve-firewall's own format checks for a rule (`pve-fw-dport-spec`,
/// `pve-fw-addr-spec`, `pve-fw-protocol-spec`), with its error texts.
fn check_firewall_rule(p: &BTreeMap<String, String>) -> Result<(), SimError> {
    const PROTOCOLS: &[&str] = &[
        "tcp",
        "udp",
        "udplite",
        "sctp",
        "dccp",
        "icmp",
        "ipv6-icmp",
        "igmp",
        "gre",
        "esp",
        "ah",
        "ipip",
        "ipencap",
        "ipv6",
        "ospf",
        "vrrp",
        "pim",
        "l2tp",
        "rsvp",
    ];
    let invalid = |key: &str, why: String| param_fail(key, format!("invalid format - {why}"));
    for key in ["dport", "sport"] {
        let Some(spec) = p.get(key) else { continue };
        for item in spec.split(',') {
            for port in item.split(':') {
                if port.parse::<u32>().map_or(true, |n| n > 65535) {
                    return Err(invalid(key, format!("invalid port '{port}'")));
                }
            }
        }
    }
    if let Some(proto) = p.get("proto")
        && !PROTOCOLS.contains(&proto.as_str())
        && proto.parse::<u8>().is_err()
    {
        return Err(invalid("proto", format!("unknown protocol '{proto}'")));
    }
    let alias = regex::Regex::new(r"^\+?((dc|guest)/)?[A-Za-z][A-Za-z0-9_-]+$").expect("regex");
    for key in ["source", "dest"] {
        let Some(spec) = p.get(key) else { continue };
        if alias.is_match(spec) {
            continue;
        }
        for elem in spec.split(',') {
            let ok = match elem.split_once('-') {
                Some((a, b)) => a.parse::<std::net::IpAddr>().is_ok() && b.parse::<std::net::IpAddr>().is_ok(),
                None => {
                    let (addr, len) = elem.split_once('/').unwrap_or((elem, "0"));
                    addr.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
                }
            };
            if !ok {
                return Err(invalid(key, format!("invalid IP address: Invalid chars in IP {elem}")));
            }
        }
    }
    Ok(())
}
