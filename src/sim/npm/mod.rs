//! Nginx Proxy Manager simulator: token login and renewal, proxy-host CRUD
//! with request bodies validated against NPM's own OpenAPI schemas (as its Ajv
//! does), the error envelope and quirks (403 without a token, 500 for a
//! garbage token, 400 for an expired one, soft delete, duplicate domains,
//! `meta.nginx_online`/`nginx_err`).

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{
    faults::{FaultKind, Faults},
    server::{SimHandler, SimRequest, SimResponse, SimServer, json_response},
};

pub struct NpmSim {
    schema: Value,
    identity: String,
    secret: String,
    /// How long issued tokens live (NPM: one day).
    pub token_lifetime: Mutex<Duration>,
    tokens: Mutex<BTreeMap<String, jiff::Timestamp>>,
    hosts: Mutex<BTreeMap<u64, Value>>,
    next_id: Mutex<u64>,
    pub faults: Mutex<Faults>,
    calls: Mutex<BTreeMap<String, u64>>,
}

fn error(status: u16, message: &str) -> SimResponse {
    json_response(status, None, &json!({"error": {"code": status, "message": message}}))
}

impl NpmSim {
    pub fn new(identity: &str, secret: &str) -> Result<Arc<Self>, String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/npm-openapi.bundled.json");
        let schema = serde_json::from_str(&std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?)
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(Self {
            schema,
            identity: identity.into(),
            secret: secret.into(),
            token_lifetime: Mutex::new(Duration::from_secs(86400)),
            tokens: Mutex::new(BTreeMap::new()),
            hosts: Mutex::new(BTreeMap::new()),
            next_id: Mutex::new(1),
            faults: Mutex::new(Faults::default()),
            calls: Mutex::new(BTreeMap::new()),
        }))
    }

    pub async fn serve(self: &Arc<Self>) -> std::io::Result<SimServer> {
        SimServer::start(self.clone(), false).await
    }

    /// Live (not deleted) proxy hosts.
    pub fn hosts(&self) -> Vec<Value> {
        self.hosts
            .lock()
            .unwrap()
            .values()
            .filter(|h| h["is_deleted"] != json!(1))
            .cloned()
            .collect()
    }

    /// Change a host's fields as someone would in the NPM UI.
    pub fn edit_host(&self, id: u64, fields: Value) {
        if let (Some(h), Some(f)) = (self.hosts.lock().unwrap().get_mut(&id), fields.as_object()) {
            for (k, v) in f {
                h[k] = v.clone();
            }
        }
    }

    /// Add a host as someone would in the NPM UI.
    pub fn add_host(&self, body: Value) -> u64 {
        self.create(&body).1
    }

    /// Make every token issued so far expire now.
    pub fn expire_tokens(&self) {
        for e in self.tokens.lock().unwrap().values_mut() {
            *e = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
        }
    }

    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.calls.lock().unwrap().clone()
    }

    fn request_schema(&self, path: &str, method: &str) -> Option<&Value> {
        self.schema["paths"][path][method]
            .get("requestBody")
            .map(|b| &b["content"]["application/json"]["schema"])
    }

    /// The body checked as NPM's Ajv checks it; the message is Ajv-like (`data/forward_port must be <= 65535`).
    fn validate(&self, path: &str, method: &str, body: &Value) -> Result<(), String> {
        let Some(schema) = self.request_schema(path, method) else {
            return Ok(());
        };
        let validator = jsonschema::validator_for(schema).map_err(|e| format!("schema: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("data{} {e}", e.instance_path()))
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(errors.join(", ")) }
    }

    fn issue_token(&self) -> Value {
        let n = self.tokens.lock().unwrap().len();
        let token = format!("eyJhbGciOiJSUzI1NiJ9.eyJzaW0iOnRydWV9.sig{n:06}");
        let expires = jiff::Timestamp::now() + jiff::SignedDuration::try_from(*self.token_lifetime.lock().unwrap()).unwrap_or_default();
        self.tokens.lock().unwrap().insert(token.clone(), expires);
        json!({"token": token, "expires": expires.to_string()})
    }

    /// NPM's quirks: no header → 403, garbage → 500, expired → 400.
    /// The refusal (status, message) when the request's token is not good.
    fn authenticate(&self, headers: &http::HeaderMap) -> Result<(), (u16, &'static str)> {
        let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
            return Err((403, "Permission Denied"));
        };
        let Some(token) = value.strip_prefix("Bearer ") else {
            return Err((403, "Permission Denied"));
        };
        if token.split('.').count() != 3 {
            return Err((500, "Internal Error"));
        }
        match self.tokens.lock().unwrap().get(token) {
            None => Err((500, "Internal Error")),
            Some(exp) if *exp <= jiff::Timestamp::now() => Err((400, "Token has expired")),
            Some(_) => Ok(()),
        }
    }

    fn domain_in_use(&self, domains: &[Value], except: Option<u64>) -> Option<String> {
        let hosts = self.hosts.lock().unwrap();
        domains.iter().filter_map(|d| d.as_str()).find_map(|d| {
            hosts
                .iter()
                .filter(|(id, h)| Some(**id) != except && h["is_deleted"] != json!(1))
                .any(|(_, h)| {
                    h["domain_names"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(d)))
                })
                .then(|| d.to_string())
        })
    }

    /// nginx rejects what it cannot load; NPM reports it in meta.
    fn nginx_meta(host: &mut Value) {
        let bad = host["advanced_config"].as_str().is_some_and(|c| c.contains("invalid_directive"));
        let meta = host["meta"].as_object_mut().expect("meta object");
        meta.insert("nginx_online".into(), json!(!bad));
        meta.insert(
            "nginx_err".into(),
            if bad {
                json!("nginx: [emerg] unknown directive \"invalid_directive\"")
            } else {
                Value::Null
            },
        );
    }

    fn create(&self, body: &Value) -> (Value, u64) {
        let id = {
            let mut n = self.next_id.lock().unwrap();
            *n += 1;
            *n - 1
        };
        let now = jiff::Timestamp::now().to_string();
        let mut host = json!({
            "id": id, "created_on": now, "modified_on": now, "owner_user_id": 1,
            "domain_names": [], "forward_scheme": "http", "forward_host": "", "forward_port": 80,
            "access_list_id": 0, "certificate_id": 0, "ssl_forced": false, "hsts_enabled": false, "hsts_subdomains": false,
            "http2_support": false, "block_exploits": false, "caching_enabled": false, "allow_websocket_upgrade": false,
            "advanced_config": "", "enabled": true, "meta": {}, "locations": [], "trust_forwarded_proto": false,
        });
        for (k, v) in body.as_object().into_iter().flatten() {
            host[k] = v.clone();
        }
        if host["certificate_id"] == json!("new") {
            host["certificate_id"] = json!(100 + id);
        }
        if !host["meta"].is_object() {
            host["meta"] = json!({});
        }
        Self::nginx_meta(&mut host);
        self.hosts.lock().unwrap().insert(id, host.clone());
        (host, id)
    }

    async fn respond(&self, req: SimRequest) -> Option<SimResponse> {
        let (fault, latency) = {
            let mut f = self.faults.lock().unwrap();
            (f.pick(&req.method, &req.path, req.method != "GET"), f.latency)
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
            Some(FaultKind::Status(code, msg)) => return Some(error(code, &msg)),
            _ => {}
        }
        let Some(path) = req.path.strip_prefix("/api") else {
            return Some(error(404, "Not Found"));
        };
        let path = path.trim_end_matches('/').to_string();
        *self.calls.lock().unwrap().entry(format!("{} {path}", req.method)).or_default() += 1;
        let body: Value = if req.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&req.body).unwrap_or(Value::Null)
        };
        Some(match (req.method.as_str(), path.as_str()) {
            ("GET", "") => json_response(
                200,
                None,
                &json!({"status": "OK", "setup": true, "version": {"major": 2, "minor": 15, "revision": 1}}),
            ),
            ("GET", "/schema") => json_response(200, None, &self.schema),
            ("POST", "/tokens") => {
                if let Err(m) = self.validate("/tokens", "post", &body) {
                    return Some(error(400, &m));
                }
                if body["identity"] == json!(self.identity) && body["secret"] == json!(self.secret) {
                    json_response(200, None, &self.issue_token())
                } else {
                    error(400, "Invalid email or password")
                }
            }
            ("GET", "/tokens") => match self.authenticate(&req.headers) {
                Ok(()) => json_response(200, None, &self.issue_token()),
                Err((status, message)) => error(status, message),
            },
            (method, p) if p.starts_with("/nginx/proxy-hosts") => {
                if let Err((status, message)) = self.authenticate(&req.headers) {
                    return Some(error(status, message));
                }
                let id: Option<u64> = p.strip_prefix("/nginx/proxy-hosts/").and_then(|s| s.parse().ok());
                match (method, id) {
                    ("GET", None) => json_response(200, None, &Value::Array(self.hosts())),
                    ("POST", None) => {
                        if let Err(m) = self.validate("/nginx/proxy-hosts", "post", &body) {
                            return Some(error(400, &m));
                        }
                        if let Some(d) = self.domain_in_use(body["domain_names"].as_array().map(Vec::as_slice).unwrap_or(&[]), None) {
                            return Some(error(400, &format!("{d} is already in use")));
                        }
                        json_response(201, None, &self.create(&body).0)
                    }
                    (m, Some(id)) => {
                        let exists = self.hosts.lock().unwrap().get(&id).is_some_and(|h| h["is_deleted"] != json!(1));
                        if !exists {
                            return Some(error(404, &format!("Not Found - {id}")));
                        }
                        match m {
                            "GET" => json_response(200, None, &self.hosts.lock().unwrap()[&id]),
                            "PUT" => {
                                if let Err(msg) = self.validate("/nginx/proxy-hosts/{hostID}", "put", &body) {
                                    return Some(error(400, &msg));
                                }
                                if let Some(d) =
                                    self.domain_in_use(body["domain_names"].as_array().map(Vec::as_slice).unwrap_or(&[]), Some(id))
                                {
                                    return Some(error(400, &format!("{d} is already in use")));
                                }
                                let mut hosts = self.hosts.lock().unwrap();
                                let host = hosts.get_mut(&id).expect("checked");
                                for (k, v) in body.as_object().into_iter().flatten() {
                                    host[k] = v.clone();
                                }
                                if host["certificate_id"] == json!("new") {
                                    host["certificate_id"] = json!(100 + id);
                                }
                                host["modified_on"] = json!(jiff::Timestamp::now().to_string());
                                Self::nginx_meta(host);
                                json_response(200, None, host)
                            }
                            "DELETE" => {
                                self.hosts.lock().unwrap().get_mut(&id).expect("checked")["is_deleted"] = json!(1);
                                json_response(200, None, &json!(true))
                            }
                            _ => error(404, "Not Found"),
                        }
                    }
                    _ => error(404, "Not Found"),
                }
            }
            _ => error(404, "Not Found"),
        })
    }
}

impl SimHandler for NpmSim {
    fn handle(&self, req: SimRequest) -> BoxFuture<'_, Option<SimResponse>> {
        Box::pin(self.respond(req))
    }
}
