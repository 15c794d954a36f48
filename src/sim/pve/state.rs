//! The simulated cluster's state and the behaviour of each call.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use serde_json::{Value, json};

use super::PveSimConfig;
use super::props::*;

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
    /// When it was started or rebooted here (`None`: running since before the simulation).
    pub started_at: Option<Instant>,
    pub lock: Option<String>,
    pub template: bool,
    pub snapshots: BTreeMap<String, (BTreeMap<String, Value>, u64)>,
    pub fw_options: BTreeMap<String, Value>,
    pub fw_rules: Vec<BTreeMap<String, Value>>,
    /// The resource pool it was created or cloned into.
    pub pool: Option<String>,
    /// What runs inside it (packages, service, update runs).
    pub os: super::guest_os::SimOs,
    /// The operating system as each snapshot saw it.
    pub os_snapshots: BTreeMap<String, super::guest_os::SimOs>,
    /// Processes the guest agent started, by PID.
    pub(super) execs: BTreeMap<u32, super::guest_os::SimExec>,
    pub(super) next_exec: u32,
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
            started_at: None,
            lock: None,
            template,
            snapshots: BTreeMap::new(),
            fw_options: BTreeMap::new(),
            fw_rules: Vec::new(),
            pool: None,
            os: Default::default(),
            os_snapshots: BTreeMap::new(),
            execs: BTreeMap::new(),
            next_exec: 0,
        }
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.config.get(key).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// Seconds since it started, as PVE counts them (whole seconds); a guest
    /// running since before the simulation has been up an hour.
    pub fn uptime(&self) -> u64 {
        match (self.running, self.started_at) {
            (false, _) => 0,
            (true, None) => 3600,
            (true, Some(at)) => at.elapsed().as_secs(),
        }
    }

    /// Whether the guest agent answers yet (it starts `delay` after boot).
    pub fn agent_up(&self, delay: std::time::Duration) -> bool {
        self.running && self.started_at.is_none_or(|at| at.elapsed() >= delay)
    }

    pub(super) fn what(&self) -> &'static str {
        if self.kind == "lxc" { "CT" } else { "VM" }
    }

    pub(super) fn memory_bytes(&self) -> u64 {
        let mib: u64 = self
            .get("memory")
            .and_then(|m| m.split(',').next().map(|s| s.trim_start_matches("current=").to_string()))
            .and_then(|m| m.parse().ok())
            .unwrap_or(512);
        mib << 20
    }

    pub(super) fn tags(&self) -> Option<String> {
        self.get("tags")
    }

    /// Pending changes become current (on start/reboot).
    pub(super) fn apply_pending(&mut self) {
        for (k, v) in std::mem::take(&mut self.pending) {
            self.config.insert(k.clone(), typed_value(&self.kind, &k, &v));
        }
        for k in std::mem::take(&mut self.pending_delete) {
            self.config.remove(&k);
        }
    }
}

#[derive(Debug)]
pub enum SimError {
    Status(u16, String),
    Params(BTreeMap<String, String>),
}

pub(super) fn fail(code: u16, msg: impl Into<String>) -> SimError {
    SimError::Status(code, msg.into())
}

pub(super) fn param_fail(key: &str, msg: impl Into<String>) -> SimError {
    SimError::Params(BTreeMap::from([(key.to_string(), msg.into())]))
}

#[derive(Clone, Debug)]
pub(super) enum Effect {
    Created(u32),
    Start(u32),
    Stop(u32),
    Reboot(u32),
    Delete(u32),
    Resize {
        vmid: u32,
        disk: String,
        bytes: u64,
    },
    Snapshot {
        vmid: u32,
        name: String,
    },
    DeleteSnapshot {
        vmid: u32,
        name: String,
    },
    Rollback {
        vmid: u32,
        name: String,
        /// Start the guest once rolled back.
        start: bool,
    },
    /// An HA resource's requested state set (`hastart`/`hastop`).
    HaState {
        vmid: u32,
        running: bool,
    },
    /// A vzdump run: a backup per guest, except those set to fail.
    Backup {
        node: String,
        vmids: Vec<u32>,
        storage: String,
        notes: String,
    },
}

pub(super) struct Task {
    pub(super) upid: String,
    pub(super) node: String,
    pub(super) task_type: String,
    pub(super) id: String,
    pub(super) pid: u32,
    pub(super) pstart: u32,
    pub(super) starttime: u64,
    done_at: Instant,
    failure: Option<String>,
    effect: Effect,
    pub(super) exitstatus: Option<String>,
    /// Lines the task wrote besides the first and last (vzdump's per-guest lines).
    pub(super) log: Vec<String>,
}

pub struct State {
    pub config: PveSimConfig,
    pub guests: BTreeMap<u32, SimGuest>,
    pub(super) tasks: Vec<Task>,
    pub(super) next_pid: u32,
    pub(super) next_mac: u32,
    /// Scheduled vzdump jobs by id, as `jobs.cfg` holds them.
    pub(super) backup_jobs: BTreeMap<String, BTreeMap<String, Value>>,
    /// Guests under HA, by VMID.
    pub(super) ha: super::ha::HaResources,
    pub(super) backups: Vec<super::storage::SimBackup>,
    /// Guests whose next backups fail, with vzdump's error.
    pub(super) backup_failures: BTreeMap<u32, String>,
    /// `pbs` storages backed by a PBS simulator, by storage id.
    pub(super) pbs_links: BTreeMap<String, super::storage::PbsLink>,
}

/// Keys PVE types as integers (JSON numbers) in a config answer; all others are strings.
impl State {
    pub fn new(config: PveSimConfig) -> Self {
        Self {
            config,
            guests: BTreeMap::new(),
            tasks: Vec::new(),
            next_pid: 0x3F000,
            next_mac: 1,
            backup_jobs: BTreeMap::new(),
            ha: Default::default(),
            backups: Vec::new(),
            backup_failures: BTreeMap::new(),
            pbs_links: BTreeMap::new(),
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
    pub(super) fn serving(&self, vmid: u32) -> bool {
        let going_down = self
            .tasks
            .iter()
            .any(|t| t.exitstatus.is_none() && matches!(t.effect, Effect::Reboot(v) | Effect::Stop(v) if v == vmid));
        !going_down && self.guests.get(&vmid).is_some_and(|g| g.running && g.os.service_ok)
    }

    pub fn advance(&mut self) {
        self.ha_round();
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
                None if matches!(effect, Effect::Backup { .. }) => {
                    let (log, failed) = self.run_backup(&effect);
                    self.tasks[i].log = log;
                    self.tasks[i].exitstatus = Some(if failed { "job errors".into() } else { "OK".into() });
                }
                None => {
                    self.apply_effect(effect);
                    self.tasks[i].exitstatus = Some("OK".into());
                }
            }
        }
    }

    /// Failures that depend on the state when the task runs (as PVE checks them in the worker).
    pub(super) fn effect_failure(&self, e: &Effect) -> Option<String> {
        let g = |vmid: &u32| self.guests.get(vmid);
        match e {
            Effect::Start(v) => g(v).and_then(|g| {
                if g.running {
                    return Some(format!("{} {v} already running", g.what()));
                }
                let mut next = g.clone();
                next.apply_pending();
                self.missing_bridge(&next).map(|b| format!("bridge '{b}' does not exist"))
            }),
            Effect::Stop(v) | Effect::Reboot(v) => g(v).filter(|g| !g.running).map(|g| format!("{} {v} not running", g.what())),
            _ => None,
        }
    }

    pub(super) fn unlock(&mut self, e: &Effect) {
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

    pub(super) fn apply_effect(&mut self, e: Effect) {
        self.unlock(&e);
        match e {
            Effect::Created(_) => {}
            Effect::Start(v) => {
                if let Some(g) = self.guests.get_mut(&v) {
                    g.apply_pending();
                    g.running = true;
                    g.started_at = Some(Instant::now());
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
                    g.os.reboot_required = false;
                    g.started_at = Some(Instant::now());
                }
            }
            Effect::Delete(v) => {
                self.guests.remove(&v);
                // `purge`: the HA resource goes with the guest.
                self.ha.remove(&v);
            }
            Effect::HaState { vmid, running } => self.ha_set(vmid, running),
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
                    g.os_snapshots.insert(name.clone(), g.os.clone());
                    g.snapshots.insert(name, (cfg, now_epoch()));
                }
            }
            Effect::DeleteSnapshot { vmid, name } => {
                if let Some(g) = self.guests.get_mut(&vmid) {
                    g.snapshots.remove(&name);
                    g.os_snapshots.remove(&name);
                }
            }
            Effect::Backup { .. } => {}
            Effect::Rollback { vmid, name, start } => {
                if let Some(g) = self.guests.get_mut(&vmid)
                    && let Some((cfg, _)) = g.snapshots.get(&name).cloned()
                {
                    g.config = cfg;
                    g.pending.clear();
                    g.pending_delete.clear();
                    // The disks go back; the count of updates run (the tests' witness) does not.
                    let updates_run = g.os.updates_run;
                    g.os = g.os_snapshots.get(&name).cloned().unwrap_or_default();
                    g.os.updates_run = updates_run;
                    g.running = start;
                    g.started_at = start.then(Instant::now);
                }
            }
        }
    }

    pub(super) fn start_task(&mut self, node: &str, task_type: &str, id: &str, effect: Effect, failure: Option<String>) -> Value {
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
            log: Vec::new(),
        });
        json!(upid)
    }

    pub(super) fn new_mac(&mut self) -> String {
        self.next_mac += 1;
        let n = self.next_mac;
        format!("BC:24:11:{:02X}:{:02X}:{:02X}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
    }

    pub(super) fn check_node(&self, node: &str) -> Result<(), SimError> {
        match self.config.nodes.iter().find(|n| n.name == node) {
            None => Err(fail(
                500,
                format!("hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"),
            )),
            Some(n) if !n.online => Err(fail(595, "No route to host")),
            Some(_) => Ok(()),
        }
    }

    pub(super) fn conf_path(kind: &str, node: &str, vmid: u32) -> String {
        if kind == "lxc" {
            format!("nodes/{node}/lxc/{vmid}.conf")
        } else {
            format!("nodes/{node}/qemu-server/{vmid}.conf")
        }
    }

    /// The guest at this node/kind/vmid, or PVE's "does not exist" error.
    pub(super) fn guest_mut(&mut self, node: &str, kind: &str, vmid: u32) -> Result<&mut SimGuest, SimError> {
        self.check_node(node)?;
        match self.guests.get_mut(&vmid) {
            Some(g) if g.node == node && g.kind == kind => Ok(g),
            _ => Err(fail(
                500,
                format!("Configuration file '{}' does not exist", Self::conf_path(kind, node, vmid)),
            )),
        }
    }

    pub(super) fn unlocked(g: &SimGuest) -> Result<(), SimError> {
        match &g.lock {
            Some(l) => Err(fail(500, format!("{} is locked ({l})", g.what()))),
            None => Ok(()),
        }
    }

    pub(super) fn cluster_resources(&self, filter: Option<&str>) -> Value {
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
                    "cpu": 0, "maxcpu": 2, "disk": 0, "maxdisk": 0, "uptime": g.uptime(),
                    "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
                });
                if let Some(t) = g.tags() {
                    e["tags"] = json!(t);
                }
                if let Some(l) = &g.lock {
                    e["lock"] = json!(l);
                }
                if let Some(p) = &g.pool {
                    e["pool"] = json!(p);
                }
                out.push(e);
            }
        }
        Value::Array(out)
    }

    pub(super) fn nodes(&self) -> Value {
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

    pub(super) fn next_id(&self, wanted: Option<&String>) -> Result<Value, SimError> {
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

    pub(super) fn task_status(&mut self, node: &str, upid: &str) -> Result<Value, SimError> {
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
