//! Proxmox Backup Server simulator: datastores, snapshots with verification
//! state, prune/verify/sync job configs (with digests), garbage collection and
//! tasks. Requests are checked against the published PBS schema; answers keep
//! PBS's quirks (plain-text error bodies under a JSON content type, JSON
//! booleans, UPIDs with a task-id field, `PBSAPIToken=id:secret`).

mod jobs;
mod state;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use serde_json::{Value, json};

pub use state::SimSnapshot;
use state::{Effect, SimError, State, bad, now};

use super::{
    faults::{FaultKind, Faults},
    schema::{Dialect, PveSchema, check_params_as},
    server::{SimHandler, SimRequest, SimResponse, SimServer, json_response},
};

pub struct PbsSimConfig {
    pub datastores: Vec<String>,
    /// Remotes configured on the server (`proxmox-backup-manager remote list`).
    pub remotes: Vec<String>,
    pub token_id: String,
    pub token_secret: String,
    pub task_duration: Duration,
}

impl Default for PbsSimConfig {
    fn default() -> Self {
        Self {
            datastores: vec!["store1".into()],
            remotes: vec!["offsite".into()],
            token_id: "operator@pbs!homelab".into(),
            token_secret: "0b7c3a1e-sim0-4e6a-8b9c-000000000000".into(),
            task_duration: Duration::from_millis(200),
        }
    }
}

pub struct PbsSim {
    schema: PveSchema,
    state: Mutex<State>,
    pub faults: Mutex<Faults>,
    calls: Mutex<BTreeMap<String, u64>>,
}

impl PbsSim {
    /// Checked against the repository's `tests/data/pbs-api-subset.json`.
    pub fn new(config: PbsSimConfig) -> Result<Arc<Self>, String> {
        let schema = PveSchema::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pbs-api-subset.json"))?;
        let stores: Vec<&str> = config.datastores.iter().map(String::as_str).collect();
        let mut state = State::new(config.token_id, config.token_secret, &stores, config.task_duration);
        state.remotes = config.remotes;
        Ok(Arc::new(Self {
            schema,
            state: Mutex::new(state),
            faults: Mutex::new(Faults::default()),
            calls: Mutex::new(BTreeMap::new()),
        }))
    }

    pub async fn serve(self: &Arc<Self>) -> std::io::Result<SimServer> {
        SimServer::start(self.clone(), true).await
    }

    pub fn token(&self) -> (String, String) {
        let s = self.state.lock().unwrap();
        (s.token_id.clone(), s.token_secret.clone())
    }

    /// A snapshot as a PVE backup to this datastore leaves it.
    pub fn add_snapshot(&self, store: &str, snap: SimSnapshot) {
        let mut s = self.state.lock().unwrap();
        s.stores.entry(store.into()).or_default().push(snap);
    }

    pub fn snapshots(&self, store: &str) -> Vec<SimSnapshot> {
        let mut s = self.state.lock().unwrap();
        s.advance(false);
        s.stores.get(store).cloned().unwrap_or_default()
    }

    /// Make the chunks of a guest's snapshots corrupt: the next verification fails them.
    pub fn corrupt(&self, store: &str, backup_id: &str) {
        let mut s = self.state.lock().unwrap();
        for snap in s.stores.get_mut(store).into_iter().flatten().filter(|x| x.backup_id == backup_id) {
            snap.corrupt = true;
        }
    }

    /// The `/config/{kind}` sections as the config file holds them.
    pub fn jobs(&self, kind: &str) -> BTreeMap<String, BTreeMap<String, Value>> {
        self.state.lock().unwrap().jobs.get(kind).cloned().unwrap_or_default()
    }

    /// A job someone made in the PBS UI.
    pub fn add_job(&self, kind: &str, id: &str, fields: Value) {
        let mut job: BTreeMap<String, Value> = serde_json::from_value(fields).unwrap_or_default();
        job.insert("id".into(), json!(id));
        self.state
            .lock()
            .unwrap()
            .jobs
            .entry(kind.into())
            .or_default()
            .insert(id.into(), job);
    }

    /// Run a job now, as its schedule would; its task ends after the task duration.
    pub fn run_job(&self, kind: &str, id: &str) -> Result<String, String> {
        jobs::run_job(&mut self.state.lock().unwrap(), kind, id).map_err(|e| e.1)
    }

    pub fn gc_schedule(&self, store: &str) -> Option<String> {
        let s = self.state.lock().unwrap();
        s.store_config.get(store)?.get("gc-schedule")?.as_str().map(str::to_string)
    }

    /// Finish every running task now.
    pub fn finish_tasks(&self) {
        self.state.lock().unwrap().advance(true);
    }

    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.calls.lock().unwrap().clone()
    }

    pub fn total_calls(&self) -> u64 {
        self.calls.lock().unwrap().values().sum()
    }

    async fn respond(&self, req: SimRequest) -> Option<SimResponse> {
        let Some(path) = req.path.strip_prefix("/api2/json") else {
            return Some(text(404, &format!("Path '{}' not found.", req.path)));
        };
        let path = path.trim_end_matches('/').to_string();
        let (fault, latency) = {
            let mut f = self.faults.lock().unwrap();
            (f.pick(&req.method, &path, req.method != "GET"), f.latency)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fault {
            Some(FaultKind::Drop) => return None,
            Some(FaultKind::Timeout) => {
                tokio::time::sleep(Duration::from_secs(600)).await;
                return None;
            }
            Some(FaultKind::Status(code, msg)) => return Some(text(code, &msg)),
            _ => {}
        }
        if !self.authenticated(&req.headers) {
            return Some(text(401, "authentication failed - invalid token"));
        }
        let Ok(route) = self.schema.route(&req.method, &path) else {
            return Some(text(404, &format!("Path '/api2/json{path}' not found.")));
        };
        let template = route.endpoint.template.clone();
        *self.calls.lock().unwrap().entry(format!("{} {template}", req.method)).or_default() += 1;
        let mut params = parse_params(&req);
        params.extend(route.path_params.clone());
        let errors = check_params_as(Dialect::Pbs, &route.endpoint.parameters, &params);
        if let Some((k, e)) = errors.into_iter().next() {
            return Some(text(400, &format!("parameter verification failed - '{k}': {e}")));
        }
        let mut state = self.state.lock().unwrap();
        state.advance(false);
        Some(match dispatch(&mut state, &req.method, &template, &params) {
            Ok(v) => json_response(200, None, &v),
            Err(SimError(code, msg)) => text(code, &msg),
        })
    }

    fn authenticated(&self, headers: &http::HeaderMap) -> bool {
        let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some(rest) = value.strip_prefix("PBSAPIToken=").or_else(|| value.strip_prefix("PBSAPIToken ")) else {
            return false;
        };
        let s = self.state.lock().unwrap();
        rest == format!("{}:{}", s.token_id, s.token_secret)
    }
}

impl SimHandler for PbsSim {
    fn handle(&self, req: SimRequest) -> BoxFuture<'_, Option<SimResponse>> {
        Box::pin(self.respond(req))
    }
}

/// The routes; answers are whole bodies (`{"data": …}` plus `digest` where PBS adds one).
fn dispatch(s: &mut State, method: &str, t: &str, p: &BTreeMap<String, String>) -> Result<Value, SimError> {
    let data = |v: Value| Ok(json!({ "data": v }));
    let store = p.get("store").cloned().unwrap_or_default();
    match (method, t) {
        ("GET", "/version") => data(json!({"version": "4.0", "release": "14", "repoid": "simulated"})),
        ("GET", "/admin/datastore") => data(Value::Array(
            s.stores
                .keys()
                .map(|k| json!({"store": k, "backend-type": "filesystem", "mount-status": "nonremovable"}))
                .collect(),
        )),
        ("GET", "/admin/datastore/{store}/groups") => data(s.groups(&store)?),
        ("GET", "/admin/datastore/{store}/snapshots") => data(s.snapshots(&store, p)?),
        ("DELETE", "/admin/datastore/{store}/snapshots") => data(s.delete_snapshot(&store, p)?),
        ("GET", "/admin/datastore/{store}/gc") => {
            s.store(&store)?;
            let mut v = json!({"store": store});
            for (k, x) in s.gc_last.get(&store).into_iter().flatten() {
                v[k] = x.clone();
            }
            if let Some(sched) = s.store_config[&store].get("gc-schedule") {
                v["schedule"] = sched.clone();
                v["next-run"] = json!(now() + 3600);
            }
            data(v)
        }
        ("POST", "/admin/datastore/{store}/gc") => {
            s.store(&store)?;
            if s.tasks.iter().any(|t| t.exit.is_none() && t.worker_type == "garbage_collection") {
                return Err(bad("garbage collection already running"));
            }
            data(json!(s.start_task(
                "garbage_collection",
                &store,
                Effect::Gc { store: store.clone() }
            )))
        }
        ("GET", "/config/datastore/{name}") => {
            let name = &p["name"];
            let cfg = s.store_config.get(name).ok_or_else(|| bad(format!("no such datastore '{name}'")))?;
            let mut v = json!({"name": name, "path": format!("/mnt/datastore/{name}")});
            for (k, x) in cfg {
                v[k] = x.clone();
            }
            Ok(json!({"data": v, "digest": state::digest(cfg)}))
        }
        ("PUT", "/config/datastore/{name}") => {
            let name = p["name"].clone();
            let cfg = s
                .store_config
                .get_mut(&name)
                .ok_or_else(|| bad(format!("no such datastore '{name}'")))?;
            jobs::check_digest(p, cfg)?;
            if let Some(g) = p.get("gc-schedule") {
                jobs::check_calendar(g)?;
                cfg.insert("gc-schedule".into(), json!(g));
            }
            data(Value::Null)
        }
        ("GET", "/nodes/{node}/tasks/{upid}/status") => data(jobs::task_status(s, &p["upid"])?),
        _ => jobs::dispatch(s, method, t, p),
    }
}

fn parse_params(req: &SimRequest) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut add = |k: String, v: String| {
        // Repeated keys (`delete=a&delete=b`) are an array; kept newline-joined.
        out.entry(k)
            .and_modify(|e| {
                e.push('\n');
                e.push_str(&v);
            })
            .or_insert(v);
    };
    let is_json = req
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    if is_json {
        let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        for (k, v) in v.as_object().cloned().unwrap_or_default() {
            add(k, v.as_str().map_or_else(|| v.to_string(), str::to_string));
        }
    } else {
        for (k, v) in url::form_urlencoded::parse(&req.body) {
            add(k.into_owned(), v.into_owned());
        }
    }
    for (k, v) in url::form_urlencoded::parse(req.query.as_bytes()) {
        add(k.into_owned(), v.into_owned());
    }
    out
}

/// PBS error answers: the bare text as the body, under a JSON content type.
fn text(status: u16, message: &str) -> SimResponse {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json;charset=UTF-8")
        .body(Full::new(Bytes::from(message.to_string())))
        .expect("valid response")
}

/// The `pbs: {NAME: …}` section of an operator config pointing at a running
/// simulator: the secret in `dir/pbs-token`, the certificate pinned.
pub fn config_section(name: &str, sim: &PbsSim, server: &SimServer, dir: &std::path::Path) -> std::io::Result<String> {
    let (token_id, secret) = sim.token();
    let token = dir.join("pbs-token");
    std::fs::write(&token, &secret)?;
    Ok(format!(
        "pbs:\n  {name}:\n    url: {}\n    tokenId: \"{token_id}\"\n    tokenSecretFile: {}\n    fingerprint: \"{}\"\n",
        server.url,
        token.display(),
        server.fingerprint.clone().unwrap_or_default()
    ))
}

/// A config endpoint pointing at a running simulator (secret written to
/// `dir/pbs-token-NAME`, certificate pinned by fingerprint).
pub fn endpoint_for(name: &str, sim: &PbsSim, server: &SimServer, dir: &std::path::Path) -> std::io::Result<crate::config::PbsEndpoint> {
    use crate::config::{PbsEndpoint, SecretSource, TlsTrust};
    let (token_id, secret) = sim.token();
    let path = dir.join(format!("pbs-token-{name}"));
    std::fs::write(&path, format!("{secret}\n"))?;
    Ok(PbsEndpoint {
        name: name.to_string(),
        url: url::Url::parse(&server.url).map_err(std::io::Error::other)?,
        token_id,
        token_secret: SecretSource::File(path),
        tls: server.fingerprint.clone().map_or(TlsTrust::System, TlsTrust::Fingerprint),
        timeout: Duration::from_secs(5),
    })
}
