//! Typed Proxmox Backup Server API client over reqwest.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{DatastoreConfig, Error, GcStatus, Job, JobKind, Params, PbsApi, PbsUpid, Snapshot, TaskStatus, codec};
use crate::{
    config::PbsEndpoint,
    http::{self, Method},
    metrics::Metrics,
    providers::proxmox_api::{Answer, Endpoint, Failure, ProxmoxApi},
};

/// One Proxmox Backup Server.
#[derive(Clone, Debug)]
pub struct PbsClient {
    api: ProxmoxApi,
}

impl PbsClient {
    pub fn new(ep: &PbsEndpoint, metrics: Option<Arc<Metrics>>) -> Result<Self, http::BuildError> {
        let endpoint = Endpoint {
            url: &ep.url,
            token_id: &ep.token_id,
            secret: &ep.token_secret,
            tls: &ep.tls,
            timeout: ep.timeout,
        };
        Ok(Self {
            api: ProxmoxApi::new("pbs", endpoint, metrics)?,
        })
    }

    /// The whole answer (`data` plus `digest` and friends); GETs are retried on transient errors.
    async fn call_raw(&self, method: Method, op: &'static str, path: &str, params: &Params) -> Result<Value, Error> {
        let once = || self.call_once(method, op, path, params);
        if method == Method::Get {
            self.api.retried(once, Error::is_transient).await
        } else {
            once().await
        }
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, op: &'static str, path: &str, params: &Params) -> Result<T, Error> {
        let v = self.call_raw(method, op, path, params).await?;
        let data = v.get("data").cloned().unwrap_or(Value::Null);
        serde_path_to_error::deserialize(data).map_err(|e| Error::Decode {
            method: method.as_str(),
            path: path.to_string(),
            at: format!("data.{}", e.path()),
            message: e.inner().to_string(),
        })
    }

    async fn call_once(&self, method: Method, op: &'static str, path: &str, params: &Params) -> Result<Value, Error> {
        let m = method.as_str();
        let result = match self.api.request(method, path, params, codec::token_header).await {
            Ok(answer) => decode(m, path, answer),
            Err(f) => Err(failure(m, path, f)),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.is_transient() => "transient_error",
            Err(_) => "error",
        };
        self.api.record(op, outcome);
        result
    }

    fn job_path(kind: JobKind, id: &str) -> String {
        format!("/config/{}/{}", kind.as_str(), urlencode(id))
    }
}

fn failure(method: &'static str, path: &str, f: Failure) -> Error {
    let path = path.to_string();
    match f {
        Failure::Credentials(m) => Error::Credentials(m),
        Failure::Timeout => Error::Timeout { method, path },
        Failure::Transport(message) => Error::Transport { method, path, message },
    }
}

/// PBS's answer: JSON, or an error in plain text (or JSON) with its reason phrase.
fn decode(m: &'static str, path: &str, answer: Answer) -> Result<Value, Error> {
    let Answer { status, body } = answer;
    if !status.is_success() {
        return Err(Error::Api {
            method: m,
            path: path.to_string(),
            status: status.as_u16(),
            message: codec::error_message(&body, status.canonical_reason().unwrap_or("")),
        });
    }
    serde_json::from_slice(&body).map_err(|e| Error::Decode {
        method: m,
        path: path.to_string(),
        at: "body".into(),
        message: e.to_string(),
    })
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn upid(s: String, m: &'static str, path: &str) -> Result<PbsUpid, Error> {
    PbsUpid::parse(&s).ok_or_else(|| Error::Decode {
        method: m,
        path: path.to_string(),
        at: "data".into(),
        message: format!("not a PBS UPID: {s:?}"),
    })
}

impl PbsApi for PbsClient {
    async fn snapshots(&self, store: &str) -> Result<Vec<Snapshot>, Error> {
        let path = format!("/admin/datastore/{}/snapshots", urlencode(store));
        self.call(Method::Get, "snapshots", &path, &vec![]).await
    }

    async fn jobs(&self, kind: JobKind) -> Result<Vec<Job>, Error> {
        let path = format!("/admin/{}", kind.as_str());
        // Without it PBS lists pull jobs only.
        let params: Params = match kind {
            JobKind::Sync => vec![("sync-direction".into(), "all".into())],
            _ => vec![],
        };
        self.call(Method::Get, "jobs", &path, &params).await
    }

    async fn create_job(&self, kind: JobKind, params: Params) -> Result<(), Error> {
        let path = format!("/config/{}", kind.as_str());
        self.call_raw(Method::Post, "create_job", &path, &params).await.map(drop)
    }

    async fn update_job(&self, kind: JobKind, id: &str, params: Params) -> Result<(), Error> {
        self.call_raw(Method::Put, "update_job", &Self::job_path(kind, id), &params)
            .await
            .map(drop)
    }

    async fn delete_job(&self, kind: JobKind, id: &str) -> Result<(), Error> {
        self.call_raw(Method::Delete, "delete_job", &Self::job_path(kind, id), &vec![])
            .await
            .map(drop)
    }

    async fn run_job(&self, kind: JobKind, id: &str) -> Result<PbsUpid, Error> {
        let path = format!("/admin/{}/{}/run", kind.as_str(), urlencode(id));
        // Declared null in the schema; the handler returns the UPID.
        let s: String = self.call(Method::Post, "run_job", &path, &vec![]).await?;
        upid(s, "POST", &path)
    }

    async fn datastore_config(&self, store: &str) -> Result<DatastoreConfig, Error> {
        let path = format!("/config/datastore/{}", urlencode(store));
        let v = self.call_raw(Method::Get, "datastore_config", &path, &vec![]).await?;
        Ok(DatastoreConfig {
            gc_schedule: v["data"]["gc-schedule"].as_str().map(str::to_string),
            digest: v["digest"].as_str().map(str::to_string),
        })
    }

    async fn set_gc_schedule(&self, store: &str, schedule: &str, digest: Option<&str>) -> Result<(), Error> {
        let path = format!("/config/datastore/{}", urlencode(store));
        let mut params: Params = vec![("gc-schedule".into(), schedule.into())];
        if let Some(d) = digest {
            params.push(("digest".into(), d.into()));
        }
        self.call_raw(Method::Put, "set_gc_schedule", &path, &params).await.map(drop)
    }

    async fn gc_status(&self, store: &str) -> Result<GcStatus, Error> {
        let path = format!("/admin/datastore/{}/gc", urlencode(store));
        self.call(Method::Get, "gc_status", &path, &vec![]).await
    }

    async fn task_status(&self, upid: &PbsUpid) -> Result<TaskStatus, Error> {
        let path = format!("/nodes/localhost/tasks/{}/status", urlencode(&upid.raw));
        self.call(Method::Get, "task_status", &path, &vec![]).await
    }
}

pub fn clients_from_config(
    config: &crate::config::Config,
    metrics: Option<Arc<Metrics>>,
) -> Result<std::collections::BTreeMap<String, PbsClient>, String> {
    config
        .pbs
        .iter()
        .map(|(name, ep)| {
            PbsClient::new(ep, metrics.clone())
                .map(|c| (name.clone(), c))
                .map_err(|e| format!("pbs.{name}: {e}"))
        })
        .collect()
}
