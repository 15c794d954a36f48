//! Technitium DNS Server simulator: zones and records with the real envelope
//! (`status` on HTTP 200), Bearer tokens, `overwrite` semantics, the TTL quirk of
//! `records/update`, and the server's error texts. Parameters are checked
//! against the contract in `tests/data/technitium-api.json`.

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

const DEFAULT_TTL: u64 = 3600;

#[derive(Clone, Debug, PartialEq)]
pub struct SimRecord {
    pub name: String,
    pub rtype: String,
    pub ttl: u64,
    pub comments: Option<String>,
    pub rdata: Value,
}

pub struct TechnitiumSim {
    contract: Value,
    token: String,
    zones: Mutex<BTreeMap<String, Vec<SimRecord>>>,
    pub faults: Mutex<Faults>,
    calls: Mutex<BTreeMap<String, u64>>,
}

fn ok(response: Value) -> SimResponse {
    json_response(200, None, &json!({"status": "ok", "server": "dns-sim", "response": response}))
}

fn fail(message: impl Into<String>) -> SimResponse {
    json_response(
        200,
        None,
        &json!({"status": "error", "server": "dns-sim", "errorMessage": message.into()}),
    )
}

/// The value fields of each type (identity of a record within its RRset).
fn value_keys(rtype: &str) -> &'static [&'static str] {
    match rtype {
        "A" | "AAAA" => &["ipAddress"],
        "CNAME" => &["cname"],
        "PTR" => &["ptrName"],
        "NS" => &["nameServer"],
        "TXT" => &["text"],
        "MX" => &["preference", "exchange"],
        "SRV" => &["priority", "weight", "port", "target"],
        "CAA" => &["flags", "tag", "value"],
        _ => &[],
    }
}

const INTEGER_FIELDS: &[&str] = &["preference", "priority", "weight", "port", "flags"];

impl TechnitiumSim {
    /// A simulator with the given zones, checked against the repository's contract.
    pub fn new(token: &str, zones: &[&str]) -> Result<Arc<Self>, String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/technitium-api.json");
        let contract: Value = serde_json::from_str(&std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Arc::new(Self {
            contract,
            token: token.to_string(),
            zones: Mutex::new(
                zones
                    .iter()
                    .map(|z| (z.trim_end_matches('.').to_ascii_lowercase(), vec![]))
                    .collect(),
            ),
            faults: Mutex::new(Faults::default()),
            calls: Mutex::new(BTreeMap::new()),
        }))
    }

    pub async fn serve(self: &Arc<Self>) -> std::io::Result<SimServer> {
        SimServer::start(self.clone(), false).await
    }

    /// Change the records at `name` behind the operator's back (someone in the web console).
    pub fn edit_records(&self, name: &str, mut edit: impl FnMut(&mut SimRecord)) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        for r in self.zones.lock().unwrap().values_mut().flatten().filter(|r| r.name == name) {
            edit(r);
        }
    }

    /// Records at `name` (any type), as the server holds them.
    pub fn records(&self, name: &str) -> Vec<SimRecord> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.zones
            .lock()
            .unwrap()
            .values()
            .flatten()
            .filter(|r| r.name == name)
            .cloned()
            .collect()
    }

    /// Add a record behind the operator's back (a foreign record).
    pub fn add_record(&self, zone: &str, rec: SimRecord) {
        self.zones
            .lock()
            .unwrap()
            .entry(zone.trim_end_matches('.').to_string())
            .or_default()
            .push(rec);
    }

    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.calls.lock().unwrap().clone()
    }

    fn endpoint(&self, path: &str) -> Option<&Value> {
        self.contract["endpoints"].as_array()?.iter().find(|e| e["path"] == path)
    }

    /// Required parameters and value types, with the server's texts.
    fn check(&self, endpoint: &Value, p: &BTreeMap<String, String>) -> Result<(), String> {
        let rtype = p.get("type").map(|t| t.to_ascii_uppercase());
        for (name, def) in endpoint["params"].as_object().into_iter().flatten() {
            let applies = def["for"]
                .as_array()
                .is_none_or(|types| rtype.as_deref().is_some_and(|t| types.iter().any(|x| x == t)));
            let required = def["required"] == true || (def["required_for_type"] == true && applies);
            match p.get(name) {
                None if required => return Err(format!("Parameter '{name}' missing.")),
                None => {}
                Some(v) => match def["type"].as_str() {
                    Some("boolean") if v != "true" && v != "false" => {
                        return Err(format!("String '{v}' was not recognized as a valid Boolean."));
                    }
                    Some("integer") if name != "ttl" && v.parse::<i64>().is_err() => {
                        return Err(format!("The input string '{v}' was not in a correct format."));
                    }
                    Some("enum") if !def["values"].as_array().is_some_and(|vs| vs.iter().any(|x| x == v.as_str())) => {
                        return Err(format!("Requested value '{v}' was not found."));
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }

    async fn respond(&self, req: SimRequest) -> Option<SimResponse> {
        let (fault, latency) = {
            let mut f = self.faults.lock().unwrap();
            (f.pick(&req.method, &req.path, req.method == "POST"), f.latency)
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
            Some(FaultKind::Status(code, msg)) => return Some(json_response(code, Some(&msg), &Value::Null)),
            _ => {}
        }
        let Some(endpoint) = self.endpoint(&req.path).cloned() else {
            // Unknown paths under /api/ answer 404 with an empty body.
            return Some(
                http::Response::builder()
                    .status(404)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap(),
            );
        };
        *self.calls.lock().unwrap().entry(req.path.clone()).or_default() += 1;
        let mut p: BTreeMap<String, String> = url::form_urlencoded::parse(&req.body).into_owned().collect();
        p.extend(url::form_urlencoded::parse(req.query.as_bytes()).into_owned());
        let bearer = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let token = bearer.or_else(|| p.get("token").cloned());
        let open = endpoint["name"] == "login";
        if !open && token.as_deref() != Some(self.token.as_str()) {
            return Some(json_response(
                200,
                None,
                &json!({"status": "invalid-token", "server": "dns-sim", "errorMessage": "Invalid token or session expired."}),
            ));
        }
        if let Err(m) = self.check(&endpoint, &p) {
            return Some(fail(m));
        }
        Some(match endpoint["name"].as_str().unwrap_or_default() {
            "login" => {
                if p.get("user").map(String::as_str) == Some("admin") && p.get("pass").map(String::as_str) == Some("admin") {
                    json_response(
                        200,
                        None,
                        &json!({"status": "ok", "server": "dns-sim", "token": self.token, "username": "admin"}),
                    )
                } else {
                    fail("Invalid username or password.")
                }
            }
            "sessionGet" => ok(json!({})),
            "listZones" => {
                let zones = self.zones.lock().unwrap();
                ok(
                    json!({"zones": zones.keys().map(|z| json!({"name": z, "type": "Primary", "disabled": false, "internal": false})).collect::<Vec<_>>()}),
                )
            }
            "getRecords" => self.get_records(&p),
            "addRecord" => self.add(&p),
            "deleteRecord" => self.delete(&p),
            "updateRecord" => self.update(&p),
            other => fail(format!("{other} is not implemented by the simulator")),
        })
    }

    fn zone_of(&self, p: &BTreeMap<String, String>) -> Result<String, String> {
        let domain = p
            .get("domain")
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .unwrap_or_default();
        let zones = self.zones.lock().unwrap();
        match p.get("zone") {
            Some(z) => {
                let z = z.trim_end_matches('.').to_ascii_lowercase();
                if zones.contains_key(&z) {
                    Ok(z)
                } else {
                    Err(format!("No such zone was found: {z}"))
                }
            }
            None => zones
                .keys()
                .filter(|z| domain == **z || domain.ends_with(&format!(".{z}")))
                .max_by_key(|z| z.len())
                .cloned()
                .ok_or_else(|| format!("No such zone was found: {domain}")),
        }
    }

    fn rdata(rtype: &str, p: &BTreeMap<String, String>) -> Value {
        let mut m = serde_json::Map::new();
        for k in value_keys(rtype) {
            if let Some(v) = p.get(*k) {
                let v = v.trim_end_matches('.');
                let value = if INTEGER_FIELDS.contains(k) {
                    json!(v.parse::<u64>().unwrap_or(0))
                } else {
                    json!(v.to_ascii_lowercase())
                };
                m.insert(
                    k.to_string(),
                    if *k == "text" || *k == "ipAddress" || *k == "value" {
                        json!(v)
                    } else {
                        value
                    },
                );
            }
        }
        Value::Object(m)
    }

    fn shape(r: &SimRecord) -> Value {
        let mut v = json!({
            "name": r.name, "type": r.rtype, "ttl": r.ttl, "ttlString": format!("{}s", r.ttl), "disabled": false,
            "rData": r.rdata, "dnssecStatus": "Unknown", "lastUsedOn": "0001-01-01T00:00:00",
            "lastModified": "2026-11-22T00:00:00Z", "expiryTtl": 0, "expiryTtlString": "0s",
        });
        if let Some(c) = &r.comments {
            v["comments"] = json!(c);
        }
        v
    }

    fn get_records(&self, p: &BTreeMap<String, String>) -> SimResponse {
        let zone = match self.zone_of(p) {
            Ok(z) => z,
            Err(m) => return fail(m),
        };
        let domain = p["domain"].trim_end_matches('.').to_ascii_lowercase();
        let zones = self.zones.lock().unwrap();
        let records: Vec<Value> = zones[&zone]
            .iter()
            .filter(|r| r.name == domain || p.get("listZone").is_some_and(|l| l == "true"))
            .map(Self::shape)
            .collect();
        ok(json!({"zone": {"name": zone, "type": "Primary", "disabled": false, "internal": false}, "records": records}))
    }

    fn add(&self, p: &BTreeMap<String, String>) -> SimResponse {
        let zone = match self.zone_of(p) {
            Ok(z) => z,
            Err(m) => return fail(m),
        };
        let rtype = p["type"].to_ascii_uppercase();
        let name = p["domain"].trim_end_matches('.').to_ascii_lowercase();
        let ttl = match p.get("ttl") {
            Some(t) => match t.parse::<u64>() {
                Ok(t) => t,
                Err(_) => return fail(format!("The input string '{t}' was not in a correct format.")),
            },
            None => DEFAULT_TTL,
        };
        let missing = value_keys(&rtype).iter().find(|k| !p.contains_key(**k));
        if let Some(k) = missing {
            return fail(format!("Parameter '{k}' missing."));
        }
        let rec = SimRecord {
            name: name.clone(),
            rtype: rtype.clone(),
            ttl,
            comments: p.get("comments").cloned().filter(|c| !c.is_empty()),
            rdata: Self::rdata(&rtype, p),
        };
        let mut zones = self.zones.lock().unwrap();
        let records = zones.get_mut(&zone).expect("zone checked");
        let others_at_name = records.iter().any(|r| r.name == name && r.rtype != rtype);
        if (rtype == "CNAME" && others_at_name) || (rtype != "CNAME" && records.iter().any(|r| r.name == name && r.rtype == "CNAME")) {
            return fail("Cannot add record: a CNAME record cannot exists with other record types for the same name.");
        }
        if p.get("overwrite").is_some_and(|o| o == "true") || rtype == "CNAME" {
            records.retain(|r| !(r.name == name && r.rtype == rtype));
        } else if records.iter().any(|r| r.name == name && r.rtype == rtype && r.rdata == rec.rdata) {
            return fail("Record already exists. Use overwrite option if you wish to overwrite existing record.");
        }
        // All records of an RRset share one TTL.
        for r in records.iter_mut().filter(|r| r.name == name && r.rtype == rtype) {
            r.ttl = ttl;
        }
        records.push(rec.clone());
        ok(json!({"zone": {"name": zone, "type": "Primary"}, "addedRecord": Self::shape(&rec)}))
    }

    fn delete(&self, p: &BTreeMap<String, String>) -> SimResponse {
        let zone = match self.zone_of(p) {
            Ok(z) => z,
            Err(m) => return fail(m),
        };
        let rtype = p["type"].to_ascii_uppercase();
        let name = p["domain"].trim_end_matches('.').to_ascii_lowercase();
        let rdata = Self::rdata(&rtype, p);
        let mut zones = self.zones.lock().unwrap();
        let records = zones.get_mut(&zone).expect("zone checked");
        let before = records.len();
        records.retain(|r| !(r.name == name && r.rtype == rtype && (rtype == "CNAME" || r.rdata == rdata)));
        if records.len() == before {
            return fail("Cannot delete record: no such record exists.");
        }
        ok(json!({}))
    }

    fn update(&self, p: &BTreeMap<String, String>) -> SimResponse {
        let zone = match self.zone_of(p) {
            Ok(z) => z,
            Err(m) => return fail(m),
        };
        let rtype = p["type"].to_ascii_uppercase();
        let name = p["domain"].trim_end_matches('.').to_ascii_lowercase();
        let rdata = Self::rdata(&rtype, p);
        let mut zones = self.zones.lock().unwrap();
        let Some(r) = zones
            .get_mut(&zone)
            .expect("zone checked")
            .iter_mut()
            .find(|r| r.name == name && r.rtype == rtype && r.rdata == rdata)
        else {
            return fail("Cannot update record: the old record does not exists.");
        };
        if let Some(ip) = p.get("newIpAddress") {
            r.rdata = json!({"ipAddress": ip});
        }
        // QUIRK kept: an update without ttl resets the record to the default TTL.
        r.ttl = p.get("ttl").and_then(|t| t.parse().ok()).unwrap_or(DEFAULT_TTL);
        if let Some(c) = p.get("comments") {
            r.comments = Some(c.clone()).filter(|c| !c.is_empty());
        }
        ok(json!({"updatedRecord": Self::shape(r)}))
    }
}

impl SimHandler for TechnitiumSim {
    fn handle(&self, req: SimRequest) -> BoxFuture<'_, Option<SimResponse>> {
        Box::pin(self.respond(req))
    }
}
