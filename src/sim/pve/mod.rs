//! Proxmox VE simulator: nodes, storages, templates, QEMU and LXC guests,
//! async tasks with locks, pending changes, snapshots, firewall, agent answers.
//! Requests are checked against the published schema; answers keep PVE's
//! shapes and quirks (0/1 booleans, `nextid` as a string, UPIDs, reason phrases).

mod agent;
mod backup;
mod firewall;
mod guest_config;
pub mod guest_os;
mod ha;
mod props;
mod restore;
mod routes;
mod state;
mod storage;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use serde_json::{Value, json};

pub use super::schema::PveSchema;
pub use agent::stand_in_web_server;
pub use guest_os::{SimOs, SimPackage};
use state::State;
pub use state::{SimGuest, SimNode};
pub use storage::{SimBackup, SimStorage};

use super::{
    faults::{FaultKind, Faults},
    server::{SimHandler, SimRequest, SimResponse, SimServer, json_response},
};

/// What the simulated cluster starts with.
#[derive(Clone, Debug)]
pub struct PveSimConfig {
    pub nodes: Vec<SimNode>,
    pub storages: Vec<SimStorage>,
    pub bridges: Vec<String>,
    /// Resource pools (`/pools`).
    pub pools: Vec<String>,
    /// Volumes that exist on every node (`local:vztmpl/…`, `local:iso/…`).
    pub volumes: Vec<String>,
    pub token_id: String,
    pub token_secret: String,
    pub task_duration: Duration,
    /// How long after a QEMU guest boots its agent starts answering.
    pub agent_delay: Duration,
    pub tls: bool,
}

impl Default for PveSimConfig {
    fn default() -> Self {
        Self {
            nodes: vec![
                SimNode {
                    name: "pve1".into(),
                    maxmem: 32 << 30,
                    basemem: 6 << 30,
                    online: true,
                },
                SimNode {
                    name: "pve2".into(),
                    maxmem: 64 << 30,
                    basemem: 8 << 30,
                    online: true,
                },
                SimNode {
                    name: "pve3".into(),
                    maxmem: 32 << 30,
                    basemem: 4 << 30,
                    online: true,
                },
            ],
            storages: vec![
                SimStorage::new("local", "dir", "iso,vztmpl,backup"),
                SimStorage::new("local-lvm", "lvmthin", "images,rootdir"),
                SimStorage::new("tank", "zfspool", "images,rootdir"),
                SimStorage::new("pbs1", "pbs", "backup"),
            ],
            bridges: vec!["vmbr0".into(), "vmbr1".into()],
            pools: vec!["homelab".into()],
            volumes: vec![
                "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
                "local:vztmpl/alpine-3.22-default_20250617_amd64.tar.xz".into(),
                "local:iso/debian-13.1.0-amd64-netinst.iso".into(),
            ],
            token_id: "operator@pve!homelab".into(),
            token_secret: "5e1f0c1a-sim0-4b8e-9c1d-000000000000".into(),
            task_duration: Duration::from_millis(300),
            agent_delay: Duration::ZERO,
            tls: true,
        }
    }
}

/// The simulator; clone the `Arc` to inspect or change its state from tests.
pub struct PveSim {
    schema: Arc<PveSchema>,
    state: Mutex<State>,
    pub faults: Mutex<Faults>,
    calls: Mutex<BTreeMap<String, u64>>,
}

impl PveSim {
    pub fn new(config: PveSimConfig, schema: Arc<PveSchema>) -> Arc<Self> {
        Arc::new(Self {
            schema,
            state: Mutex::new(State::new(config)),
            faults: Mutex::new(Faults::default()),
            calls: Mutex::new(BTreeMap::new()),
        })
    }

    /// A simulator with the default cluster and one cloud-init QEMU template
    /// (9000 `debian-13-cloud` on pve1), checked against the repository's schema.
    pub fn with_defaults(config: PveSimConfig) -> Result<Arc<Self>, String> {
        let schema = PveSchema::from_repository()?;
        let sim = Self::new(config, Arc::new(schema));
        sim.add_qemu_template(9000, "debian-13-cloud", "pve1");
        Ok(sim)
    }

    pub async fn serve(self: &Arc<Self>) -> std::io::Result<SimServer> {
        let tls = self.state.lock().unwrap().config.tls;
        SimServer::start(self.clone(), tls).await
    }

    pub fn token(&self) -> (String, String) {
        let s = self.state.lock().unwrap();
        (s.config.token_id.clone(), s.config.token_secret.clone())
    }

    pub fn add_qemu_template(&self, vmid: u32, name: &str, node: &str) {
        let mut s = self.state.lock().unwrap();
        let mut config = BTreeMap::new();
        config.insert("name".into(), json!(name));
        config.insert("cores".into(), json!(2));
        config.insert("memory".into(), json!("2048"));
        config.insert("scsihw".into(), json!("virtio-scsi-single"));
        config.insert("scsi0".into(), json!(format!("local-lvm:base-{vmid}-disk-0,size=4G")));
        config.insert("ide2".into(), json!(format!("local-lvm:vm-{vmid}-cloudinit,media=cdrom")));
        config.insert("net0".into(), json!("virtio=BC:24:11:00:90:00,bridge=vmbr0"));
        config.insert("agent".into(), json!("1"));
        config.insert("ostype".into(), json!("l26"));
        config.insert("tags".into(), json!("template"));
        config.insert("template".into(), json!(1));
        s.insert_guest(SimGuest::new(vmid, "qemu", node, config, true));
    }

    /// Insert a guest as if someone made it in the Proxmox UI.
    pub fn add_guest(&self, guest: SimGuest) {
        self.state.lock().unwrap().insert_guest(guest);
    }

    /// Upload an ISO image or container template (`local:iso/…`) to every node.
    pub fn add_volume(&self, volid: &str) {
        self.state.lock().unwrap().config.volumes.push(volid.into());
    }

    /// The vzdump jobs as `jobs.cfg` holds them.
    pub fn backup_jobs(&self) -> Vec<BTreeMap<String, Value>> {
        self.state.lock().unwrap().backup_jobs.values().cloned().collect()
    }

    /// A backup archive, as a vzdump run would leave it.
    pub fn add_backup(&self, backup: SimBackup) {
        self.state.lock().unwrap().store_backup(backup);
    }

    /// Keep the backups of `pbs` storage `storage` in a PBS simulator's `datastore`.
    pub fn attach_pbs(&self, storage: &str, pbs: Arc<crate::sim::pbs::PbsSim>, datastore: &str) {
        let link = storage::PbsLink {
            sim: pbs,
            datastore: datastore.into(),
        };
        self.state.lock().unwrap().pbs_links.insert(storage.into(), link);
    }

    /// The backups on a storage, as its content listing shows them.
    pub fn backups_on(&self, storage: &str) -> Vec<SimBackup> {
        let mut s = self.state.lock().unwrap();
        s.advance();
        s.backups_on(storage)
    }

    /// Make every backup of `vmid` fail with vzdump's `message` (`None`: succeed again).
    pub fn fail_backups_of(&self, vmid: u32, message: Option<&str>) {
        let mut s = self.state.lock().unwrap();
        match message {
            Some(m) => s.backup_failures.insert(vmid, m.into()),
            None => s.backup_failures.remove(&vmid),
        };
    }

    /// Run a scheduled job now, as pvescheduler would at its time; the UPIDs of its tasks.
    pub fn run_backup_job(&self, id: &str) -> Result<Vec<String>, String> {
        let mut s = self.state.lock().unwrap();
        s.advance();
        s.run_job_now(id).map_err(|e| format!("{e:?}"))
    }

    /// A job someone made in the PVE UI.
    pub fn add_backup_job(&self, id: &str, fields: Value) {
        let mut job: BTreeMap<String, Value> = fields.as_object().cloned().unwrap_or_default().into_iter().collect();
        job.insert("id".into(), json!(id));
        job.insert("type".into(), json!("vzdump"));
        self.state.lock().unwrap().backup_jobs.insert(id.into(), job);
    }

    /// Put a guest under HA, as `ha-manager add vm:<vmid>` does (state from its power now).
    pub fn manage_by_ha(&self, vmid: u32) {
        let mut s = self.state.lock().unwrap();
        let running = s.guests.get(&vmid).is_some_and(|g| g.running);
        let state = if running { "started" } else { "stopped" };
        s.ha.insert(
            vmid,
            ha::HaResource {
                state: state.into(),
                pending: None,
            },
        );
    }

    /// Whether a guest is an HA resource.
    pub fn ha_managed(&self, vmid: u32) -> bool {
        self.state.lock().unwrap().ha_managed(vmid)
    }

    /// The types of the tasks started so far (`qmstart`, `hastop`, …), oldest first.
    pub fn task_types(&self) -> Vec<String> {
        self.state.lock().unwrap().tasks.iter().map(|t| t.task_type.clone()).collect()
    }

    /// Create a bridge on every node.
    pub fn add_bridge(&self, name: &str) {
        self.state.lock().unwrap().config.bridges.push(name.into());
    }

    /// Change a guest's config behind the operator's back (drift).
    pub fn edit_config(&self, vmid: u32, key: &str, value: Value) {
        let mut s = self.state.lock().unwrap();
        if let Some(g) = s.guests.get_mut(&vmid) {
            g.config.insert(key.to_string(), value);
        }
    }

    pub fn set_power(&self, vmid: u32, running: bool) {
        let mut s = self.state.lock().unwrap();
        if let Some(g) = s.guests.get_mut(&vmid) {
            g.running = running;
        }
    }

    /// Whether the guest's services would answer: it runs, and no reboot,
    /// shutdown or stop of it is in flight (a rebooting guest is down for the
    /// task's length). For tests' stand-in services.
    pub fn serving(&self, vmid: u32) -> bool {
        let mut s = self.state.lock().unwrap();
        s.advance();
        s.serving(vmid)
    }

    /// Change what runs inside a guest (its packages, its service, how its next update goes).
    pub fn edit_os(&self, vmid: u32, edit: impl FnOnce(&mut SimOs)) {
        let mut s = self.state.lock().unwrap();
        if let Some(g) = s.guests.get_mut(&vmid) {
            edit(&mut g.os);
        }
    }

    /// A copy of a guest's state.
    pub fn guest(&self, vmid: u32) -> Option<SimGuest> {
        let mut s = self.state.lock().unwrap();
        s.advance();
        s.guests.get(&vmid).cloned()
    }

    /// Guests (not templates), after finishing due tasks.
    pub fn guests(&self) -> Vec<SimGuest> {
        let mut s = self.state.lock().unwrap();
        s.advance();
        s.guests.values().filter(|g| !g.template).cloned().collect()
    }

    /// Finish every running task now, whatever its duration.
    pub fn finish_tasks(&self) {
        self.state.lock().unwrap().finish_tasks();
    }

    pub fn set_task_duration(&self, d: Duration) {
        self.state.lock().unwrap().config.task_duration = d;
    }

    /// Calls by `METHOD /path/{template}`.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.calls.lock().unwrap().clone()
    }

    pub fn total_calls(&self) -> u64 {
        self.calls.lock().unwrap().values().sum()
    }

    pub fn reset_calls(&self) {
        self.calls.lock().unwrap().clear();
    }

    async fn respond(&self, req: SimRequest) -> Option<SimResponse> {
        let Some(path) = req.path.strip_prefix("/api2/json") else {
            return Some(error(404, "Not Found"));
        };
        let path = path.trim_end_matches('/').to_string();
        let is_write = req.method != "GET";
        let (fault, latency) = {
            let mut f = self.faults.lock().unwrap();
            (f.pick(&req.method, &path, is_write), f.latency)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match &fault {
            Some(FaultKind::Drop) => return None,
            Some(FaultKind::Timeout) => {
                tokio::time::sleep(Duration::from_secs(600)).await;
                return None;
            }
            Some(FaultKind::Status(code, msg)) => {
                // 595/596 come from the cluster proxy with no JSON body.
                return Some(if *code >= 595 {
                    json_response(*code, Some(msg), &Value::Null)
                } else {
                    error(*code, msg)
                });
            }
            _ => {}
        }
        if !self.authenticated(&req.headers) {
            return Some(error(401, "authentication failure"));
        }
        let route = match self.schema.route(&req.method, &path) {
            Ok(m) => m,
            Err(_) => {
                return Some(error(501, &format!("Method '{} {}' not implemented", req.method, path)));
            }
        };
        let template = route.endpoint.template.clone();
        let path_params = route.path_params.clone();
        *self
            .calls
            .lock()
            .unwrap()
            .entry(format!("{} {}", req.method, template))
            .or_default() += 1;
        let mut params = match parse_params(&req) {
            Ok(p) => p,
            Err(e) => return Some(error(400, &e)),
        };
        let mut all = params.clone();
        all.extend(path_params.clone());
        let errors = super::schema::check_params(&route.endpoint.parameters, &all);
        if !errors.is_empty() {
            return Some(param_error(errors));
        }
        params.extend(path_params.clone());
        let mut state = self.state.lock().unwrap();
        state.advance();
        if matches!(fault, Some(FaultKind::Locked)) && path_params.contains_key("vmid") {
            let what = if template.contains("/lxc/") { "CT" } else { "VM" };
            return Some(error(500, &format!("{what} is locked (backup)")));
        }
        let fail_task = match fault {
            Some(FaultKind::FailTask(m)) => Some(m),
            _ => None,
        };
        let result = state.dispatch(&req.method, &template, &params, fail_task);
        Some(match result {
            Ok(data) => {
                debug_assert!(!route.endpoint.returns_task || data.is_string(), "{template} must answer a UPID");
                json_response(200, None, &json!({ "data": data }))
            }
            Err(state::SimError::Status(code, msg)) => error(code, &msg),
            Err(state::SimError::Params(errors)) => param_error(errors),
        })
    }

    fn authenticated(&self, headers: &http::HeaderMap) -> bool {
        let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some(rest) = value.strip_prefix("PVEAPIToken=").or_else(|| value.strip_prefix("PVEAPIToken ")) else {
            return false;
        };
        let s = self.state.lock().unwrap();
        rest == format!("{}={}", s.config.token_id, s.config.token_secret)
    }
}

impl SimHandler for PveSim {
    fn handle(&self, req: SimRequest) -> BoxFuture<'_, Option<SimResponse>> {
        Box::pin(self.respond(req))
    }
}

fn parse_params(req: &SimRequest) -> Result<BTreeMap<String, String>, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let is_json = req
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    if !req.body.is_empty() {
        if is_json {
            let v: Value = serde_json::from_slice(&req.body).map_err(|e| format!("JSON body: {e}"))?;
            for (k, v) in v.as_object().cloned().unwrap_or_default() {
                let s = match v {
                    Value::Bool(b) => if b { "1" } else { "0" }.to_string(),
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(k, s);
            }
        } else {
            // A key given more than once (an array) arrives joined by NUL, as PVE joins it.
            for (k, v) in url::form_urlencoded::parse(&req.body) {
                out.entry(k.into_owned())
                    .and_modify(|e| {
                        e.push('\0');
                        e.push_str(&v);
                    })
                    .or_insert_with(|| v.into_owned());
            }
        }
    }
    // Query parameters are merged in and override body keys.
    for (k, v) in url::form_urlencoded::parse(req.query.as_bytes()) {
        out.insert(k.into_owned(), v.into_owned());
    }
    Ok(out)
}

fn error(status: u16, message: &str) -> SimResponse {
    json_response(status, Some(message), &json!({ "data": null, "message": format!("{message}\n") }))
}

fn param_error(errors: BTreeMap<String, String>) -> SimResponse {
    json_response(
        400,
        Some("Parameter verification failed."),
        &json!({ "data": null, "message": "Parameter verification failed.\n", "errors": errors }),
    )
}

/// The `proxmox: {default: …}` section of an operator config file pointing
/// at a running simulator, as a person writes it: the token secret in
/// `dir/pve-token`, the certificate pinned by fingerprint.
pub fn config_section(sim: &PveSim, server: &SimServer, dir: &std::path::Path) -> std::io::Result<String> {
    let (token_id, secret) = sim.token();
    let token = dir.join("pve-token");
    std::fs::write(&token, &secret)?;
    let fingerprint = server.fingerprint.clone().unwrap_or_default();
    Ok(format!(
        "proxmox:\n  default:\n    url: {}\n    tokenId: \"{token_id}\"\n    tokenSecretFile: {}\n    fingerprint: \"{fingerprint}\"\n",
        server.url,
        token.display()
    ))
}

/// A config endpoint pointing at a running simulator, with the token secret
/// written to `dir/pve-token` as a mounted Secret would be, and the
/// certificate pinned by fingerprint.
pub fn endpoint_for(
    name: &str,
    sim: &PveSim,
    server: &SimServer,
    dir: &std::path::Path,
) -> std::io::Result<crate::config::ProxmoxEndpoint> {
    use crate::config::{ProxmoxEndpoint, SecretSource, TlsTrust};
    let (token_id, secret) = sim.token();
    let path = dir.join(format!("pve-token-{name}"));
    std::fs::write(&path, format!("{secret}\n"))?;
    Ok(ProxmoxEndpoint {
        name: name.to_string(),
        url: url::Url::parse(&server.url).map_err(std::io::Error::other)?,
        token_id,
        token_secret: SecretSource::File(path),
        tls: server.fingerprint.clone().map_or(TlsTrust::System, TlsTrust::Fingerprint),
        timeout: Duration::from_secs(5),
        // As long as this simulator's agents take to answer.
        agent_boot_grace: sim.state.lock().unwrap().config.agent_delay,
    })
}
