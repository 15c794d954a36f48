//! PowerDNS Authoritative HTTP API: `/api/v1/servers/{id}/zones/{zone}`,
//! RRset PATCH with `changetype`, canonical names with the trailing dot,
//! `X-API-Key`. The ownership mark is an RRset comment (account `homelab-operator`).

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{DnsApi, Error, RecordSet, absolute};
use crate::{config::SecretSource, http, metrics::Metrics};

const ACCOUNT: &str = "homelab-operator";

#[derive(Clone)]
pub struct PowerDns {
    http: reqwest::Client,
    base: String,
    server_id: String,
    api_key: SecretSource,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for PowerDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerDns")
            .field("base", &self.base)
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Zone {
    #[serde(default)]
    rrsets: Vec<RrSet>,
}

#[derive(Deserialize, Serialize)]
struct RrSet {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    #[serde(default)]
    ttl: u32,
    #[serde(default)]
    records: Vec<Rec>,
    #[serde(default)]
    comments: Vec<Comment>,
}

#[derive(Deserialize, Serialize)]
struct Rec {
    content: String,
    #[serde(default)]
    disabled: bool,
}

#[derive(Deserialize, Serialize)]
struct Comment {
    content: String,
    #[serde(default)]
    account: String,
}

impl PowerDns {
    pub fn new(
        url: &url::Url,
        server_id: &str,
        api_key: SecretSource,
        timeout: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, http::BuildError> {
        Ok(Self {
            http: http::client(&crate::config::TlsTrust::System, timeout)?,
            base: url.as_str().trim_end_matches('/').to_string(),
            server_id: server_id.to_string(),
            api_key,
            metrics,
        })
    }

    fn zone_url(&self, zone: &str) -> String {
        format!("{}/api/v1/servers/{}/zones/{}", self.base, self.server_id, absolute(zone))
    }

    async fn send(&self, op: &'static str, req: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        let key = self.api_key.load("apiKey").map_err(|e| Error::Credentials(e.to_string()))?;
        let result = req.header("X-API-Key", key.expose()).send().await;
        let outcome = match &result {
            Ok(r) if r.status().is_success() => "ok",
            Ok(r) if r.status().is_server_error() => "transient_error",
            Ok(_) => "error",
            Err(_) => "transient_error",
        };
        if let Some(m) = &self.metrics {
            m.outside_call("powerdns", op, outcome);
        }
        let resp = result.map_err(|e| Error::Transport {
            server: self.base.clone(),
            op,
            message: e.without_url().to_string(),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        // Errors are {"error": "..."}; a missing API key gets a plain-text 401.
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| body.trim().chars().take(200).collect());
        Err(Error::Api {
            server: self.base.clone(),
            op,
            status,
            message,
        })
    }
}

impl PowerDns {
    /// The zone, or the RRsets `filter` asks for.
    async fn rrsets(&self, zone: &str, op: &'static str, filter: &[(&str, String)]) -> Result<Vec<RecordSet>, Error> {
        let req = self.http.get(self.zone_url(zone)).query(filter);
        let z: Zone = self.send(op, req).await?.json().await.map_err(|e| Error::Invalid {
            server: self.base.clone(),
            op,
            message: e.without_url().to_string(),
        })?;
        Ok(z.rrsets
            .into_iter()
            .filter(|r| !r.records.is_empty())
            .map(|r| {
                let mut values: Vec<String> = r.records.into_iter().filter(|r| !r.disabled).map(|r| r.content).collect();
                values.sort();
                RecordSet {
                    name: r.name,
                    rtype: r.rtype,
                    ttl: r.ttl,
                    values,
                    mark: r.comments.into_iter().find(|c| c.account == ACCOUNT).map(|c| c.content),
                }
            })
            .collect())
    }
}

impl DnsApi for PowerDns {
    async fn get(&self, zone: &str, name: &str, rtype: &str) -> Result<Option<RecordSet>, Error> {
        let filter = [("rrset_name", absolute(name)), ("rrset_type", rtype.to_string())];
        let want = absolute(name);
        Ok(self
            .rrsets(zone, "get_rrset", &filter)
            .await?
            .into_iter()
            .find(|r| r.name.eq_ignore_ascii_case(&want) && r.rtype.eq_ignore_ascii_case(rtype)))
    }

    async fn list(&self, zone: &str) -> Result<Vec<RecordSet>, Error> {
        self.rrsets(zone, "list_zone", &[]).await
    }

    async fn put(&self, zone: &str, set: &RecordSet) -> Result<(), Error> {
        let comments: Vec<Comment> = set
            .mark
            .iter()
            .map(|m| Comment {
                content: m.clone(),
                account: ACCOUNT.into(),
            })
            .collect();
        let mut rrset = serde_json::to_value(RrSet {
            name: absolute(&set.name),
            rtype: set.rtype.clone(),
            ttl: set.ttl,
            records: set
                .values
                .iter()
                .map(|v| Rec {
                    content: v.clone(),
                    disabled: false,
                })
                .collect(),
            comments,
        })
        .expect("rrset serializes");
        rrset["changetype"] = json!("REPLACE");
        let body = json!({ "rrsets": [rrset] });
        self.send("replace_rrset", self.http.patch(self.zone_url(zone)).json(&body))
            .await
            .map(|_| ())
    }

    async fn delete(&self, zone: &str, name: &str, rtype: &str) -> Result<(), Error> {
        let body = json!({"rrsets": [{"name": absolute(name), "type": rtype, "changetype": "DELETE"}]});
        self.send("delete_rrset", self.http.patch(self.zone_url(zone)).json(&body))
            .await
            .map(|_| ())
    }
}
