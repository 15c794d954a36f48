//! Technitium DNS Server HTTP API: Bearer token, form parameters, an envelope
//! with `status: ok | error | invalid-token` on HTTP 200. The ownership mark is
//! the records' `comments`. An RRset is replaced by adding its first value with
//! `overwrite=true` and appending the rest.

use std::{sync::Arc, time::Duration};

use serde::Deserialize;

use super::{DnsApi, Error, RecordSet, absolute};
use crate::{config::SecretSource, http, metrics::Metrics};

#[derive(Clone)]
pub struct Technitium {
    http: reqwest::Client,
    base: String,
    token: SecretSource,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Technitium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Technitium").field("base", &self.base).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default, rename = "errorMessage")]
    error_message: Option<String>,
    #[serde(default)]
    response: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Record {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    ttl: u32,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    comments: Option<String>,
    #[serde(rename = "rData")]
    rdata: serde_json::Value,
}

/// Technitium names carry no trailing dot.
fn bare(name: &str) -> String {
    absolute(name).trim_end_matches('.').to_string()
}

/// A record's value in presentation format (names absolute with the dot).
fn presentation(rtype: &str, r: &serde_json::Value) -> Option<String> {
    let s = |k: &str| r.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let n = |k: &str| r.get(k).and_then(|v| v.as_u64());
    Some(match rtype {
        "A" | "AAAA" => s("ipAddress")?,
        "CNAME" => absolute(&s("cname")?),
        "PTR" => absolute(&s("ptrName")?),
        "NS" => absolute(&s("nameServer")?),
        "TXT" => format!("\"{}\"", s("text")?.replace('\\', "\\\\").replace('"', "\\\"")),
        "MX" => format!("{} {}", n("preference")?, absolute(&s("exchange")?)),
        "SRV" => format!("{} {} {} {}", n("priority")?, n("weight")?, n("port")?, absolute(&s("target")?)),
        "CAA" => format!("{} {} \"{}\"", n("flags")?, s("tag")?, s("value")?),
        _ => return None,
    })
}

/// The form parameters that carry one value of a type (used by add and delete).
fn value_params(rtype: &str, value: &str) -> Result<Vec<(String, String)>, String> {
    let strip = |n: &str| n.trim_end_matches('.').to_string();
    let parts: Vec<&str> = value.split_whitespace().collect();
    let p = |pairs: &[(&str, String)]| pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    Ok(match (rtype, parts.as_slice()) {
        ("A" | "AAAA", _) => p(&[("ipAddress", value.to_string())]),
        ("CNAME", _) => p(&[("cname", strip(value))]),
        ("PTR", _) => p(&[("ptrName", strip(value))]),
        ("NS", _) => p(&[("nameServer", strip(value))]),
        // Technitium takes the text whole and splits it into strings itself.
        ("TXT", _) => p(&[("text", txt_text(value))]),
        ("MX", [pref, host]) => p(&[("preference", pref.to_string()), ("exchange", strip(host))]),
        ("SRV", [prio, weight, port, target]) => p(&[
            ("priority", prio.to_string()),
            ("weight", weight.to_string()),
            ("port", port.to_string()),
            ("target", strip(target)),
        ]),
        ("CAA", [flags, tag, v]) => p(&[
            ("flags", flags.to_string()),
            ("tag", tag.to_string()),
            ("value", v.trim_matches('"').to_string()),
        ]),
        _ => return Err(format!("cannot express {rtype} value {value:?} for Technitium")),
    })
}

/// The text of a TXT value given as quoted strings (`"a" "b"` → `ab`), unescaped.
fn txt_text(value: &str) -> String {
    let (mut out, mut quoted, mut escaped) = (String::new(), false, false);
    for c in value.chars() {
        match (quoted, escaped, c) {
            (true, false, '\\') => escaped = true,
            (true, false, '"') | (false, _, '"') => quoted = !quoted,
            (true, _, c) => {
                out.push(c);
                escaped = false;
            }
            (false, _, _) => {}
        }
    }
    if out.is_empty() && !value.contains('"') {
        value.to_string()
    } else {
        out
    }
}

impl Technitium {
    pub fn new(url: &url::Url, token: SecretSource, timeout: Duration, metrics: Option<Arc<Metrics>>) -> Result<Self, http::BuildError> {
        Ok(Self {
            http: http::client(&crate::config::TlsTrust::System, timeout)?,
            base: url.as_str().trim_end_matches('/').to_string(),
            token,
            metrics,
        })
    }

    /// One call: POST with a form body, Bearer token, envelope checked.
    async fn call(&self, op: &'static str, path: &str, params: Vec<(String, String)>) -> Result<serde_json::Value, Error> {
        let token = self.token.load("token").map_err(|e| Error::Credentials(e.to_string()))?;
        let result = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token.expose())
            .form(&params)
            .send()
            .await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                self.count(op, "transient_error");
                return Err(Error::Transport {
                    server: self.base.clone(),
                    op,
                    message: e.without_url().to_string(),
                });
            }
        };
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| Error::Transport {
            server: self.base.clone(),
            op,
            message: e.without_url().to_string(),
        })?;
        if status != 200 {
            self.count(op, if status >= 500 { "transient_error" } else { "error" });
            return Err(Error::Api {
                server: self.base.clone(),
                op,
                status,
                message: String::from_utf8_lossy(&body).trim().chars().take(200).collect(),
            });
        }
        let env: Envelope = serde_json::from_slice(&body).map_err(|e| Error::Invalid {
            server: self.base.clone(),
            op,
            message: format!("not a Technitium answer: {e}"),
        })?;
        match env.status.as_str() {
            "ok" => {
                self.count(op, "ok");
                Ok(env.response.unwrap_or(serde_json::Value::Null))
            }
            "invalid-token" => {
                self.count(op, "error");
                Err(Error::Api {
                    server: self.base.clone(),
                    op,
                    status: 401,
                    message: env.error_message.unwrap_or_else(|| "invalid token".into()),
                })
            }
            other => {
                self.count(op, "error");
                let message = env.error_message.unwrap_or_else(|| format!("status {other}"));
                // "Access was denied." is a permission problem; the rest are refusals.
                let status = if message.contains("Access was denied") { 403 } else { 400 };
                Err(Error::Api {
                    server: self.base.clone(),
                    op,
                    status,
                    message,
                })
            }
        }
    }

    fn count(&self, op: &'static str, outcome: &'static str) {
        if let Some(m) = &self.metrics {
            m.outside_call("technitium", op, outcome);
        }
    }

    fn invalid(&self, op: &'static str, message: String) -> Error {
        Error::Invalid {
            server: self.base.clone(),
            op,
            message,
        }
    }
}

/// Records grouped into RRsets by name and type (enabled records only).
fn rrsets(records: &[Record]) -> Vec<RecordSet> {
    let mut sets: std::collections::BTreeMap<(String, String), RecordSet> = std::collections::BTreeMap::new();
    for r in records.iter().filter(|r| !r.disabled) {
        let key = (r.name.to_ascii_lowercase(), r.rtype.to_ascii_uppercase());
        let set = sets.entry(key).or_insert_with(|| RecordSet {
            name: absolute(&r.name),
            rtype: r.rtype.to_ascii_uppercase(),
            ttl: r.ttl,
            values: vec![],
            mark: None,
        });
        set.values.extend(presentation(&r.rtype, &r.rdata));
        set.mark = set.mark.take().or_else(|| r.comments.clone().filter(|c| !c.is_empty()));
    }
    sets.into_values()
        .map(|mut s| {
            s.values.sort();
            s
        })
        .collect()
}

impl DnsApi for Technitium {
    async fn get(&self, zone: &str, name: &str, rtype: &str) -> Result<Option<RecordSet>, Error> {
        let params = vec![("domain".into(), bare(name)), ("zone".into(), bare(zone))];
        let resp = self.call("get_records", "/api/zones/records/get", params).await?;
        let records: Vec<Record> = serde_json::from_value(resp.get("records").cloned().unwrap_or_default()).unwrap_or_default();
        let want = absolute(name);
        Ok(rrsets(&records)
            .into_iter()
            .find(|s| s.name.eq_ignore_ascii_case(&want) && s.rtype.eq_ignore_ascii_case(rtype)))
    }

    async fn list(&self, zone: &str) -> Result<Vec<RecordSet>, Error> {
        let params = vec![
            ("domain".into(), bare(zone)),
            ("zone".into(), bare(zone)),
            ("listZone".into(), "true".into()),
        ];
        let resp = self.call("list_zone", "/api/zones/records/get", params).await?;
        let records: Vec<Record> = serde_json::from_value(resp.get("records").cloned().unwrap_or_default()).unwrap_or_default();
        Ok(rrsets(&records))
    }

    async fn put(&self, zone: &str, set: &RecordSet) -> Result<(), Error> {
        for (i, value) in set.values.iter().enumerate() {
            let mut params = vec![
                ("domain".to_string(), bare(&set.name)),
                ("zone".to_string(), bare(zone)),
                ("type".to_string(), set.rtype.clone()),
                // Always sent: Technitium falls back to its default TTL otherwise.
                ("ttl".to_string(), set.ttl.to_string()),
                // The first value replaces the RRset; the others append to it.
                ("overwrite".to_string(), if i == 0 { "true" } else { "false" }.to_string()),
            ];
            if let Some(mark) = &set.mark {
                params.push(("comments".into(), mark.clone()));
            }
            params.extend(value_params(&set.rtype, value).map_err(|m| self.invalid("add_record", m))?);
            self.call("add_record", "/api/zones/records/add", params).await?;
        }
        Ok(())
    }

    async fn delete(&self, zone: &str, name: &str, rtype: &str) -> Result<(), Error> {
        let Some(current) = self.get(zone, name, rtype).await? else {
            return Ok(());
        };
        for value in &current.values {
            let mut params = vec![
                ("domain".to_string(), bare(name)),
                ("zone".to_string(), bare(zone)),
                ("type".to_string(), rtype.to_string()),
            ];
            params.extend(value_params(rtype, value).map_err(|m| self.invalid("delete_record", m))?);
            self.call("delete_record", "/api/zones/records/delete", params).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_strings_are_joined_back_into_the_text_technitium_splits_itself() {
        assert_eq!(txt_text("\"v=spf1 -all\""), "v=spf1 -all");
        assert_eq!(txt_text("\"abc\" \"def\""), "abcdef");
        assert_eq!(txt_text("\"say \\\"hi\\\"\""), "say \"hi\"");
    }
}
