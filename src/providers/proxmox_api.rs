//! What the Proxmox VE and Proxmox Backup Server clients share: one
//! endpoint's HTTP client and `/api2/json` base, requests signed with the API
//! token, retries of idempotent calls, and one outcome metric per call. Each
//! client keeps its own error type and answer decoding.

use std::{fmt::Display, future::Future, sync::Arc, time::Duration};

use backon::Retryable;

use crate::{
    config::{SecretSource, TlsTrust},
    http::{self, Method},
    metrics::Metrics,
};

/// Why a request got no HTTP answer.
pub enum Failure {
    /// The token secret could not be read.
    Credentials(String),
    Timeout,
    Transport(String),
}

/// An HTTP answer, successful or not.
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub body: bytes::Bytes,
}

#[derive(Clone)]
pub struct ProxmoxApi {
    http: reqwest::Client,
    base: String,
    token_id: String,
    secret: SecretSource,
    metrics: Option<Arc<Metrics>>,
    /// `pve` or `pbs`: the metric and log label.
    system: &'static str,
}

impl std::fmt::Debug for ProxmoxApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxmoxApi")
            .field("base", &self.base)
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

/// Where and as whom a client calls.
pub struct Endpoint<'a> {
    pub url: &'a url::Url,
    pub token_id: &'a str,
    pub secret: &'a SecretSource,
    pub tls: &'a TlsTrust,
    pub timeout: Duration,
}

impl ProxmoxApi {
    pub fn new(system: &'static str, ep: Endpoint<'_>, metrics: Option<Arc<Metrics>>) -> Result<Self, http::BuildError> {
        Ok(Self {
            http: http::client(ep.tls, ep.timeout)?,
            base: format!("{}/api2/json", ep.url.as_str().trim_end_matches('/')),
            token_id: ep.token_id.to_string(),
            secret: ep.secret.clone(),
            metrics,
            system,
        })
    }

    /// One request; `auth` makes the Authorization header from the token id and secret.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        params: &[(String, String)],
        auth: fn(&str, &str) -> String,
    ) -> Result<Answer, Failure> {
        let secret = self.secret.load("tokenSecret").map_err(|e| Failure::Credentials(e.to_string()))?;
        let url = format!("{}{}", self.base, path);
        let req = match method {
            Method::Get => self.http.get(&url).query(params),
            Method::Delete => self.http.delete(&url).query(params),
            Method::Post => self.http.post(&url).form(params),
            Method::Put => self.http.put(&url).form(params),
        }
        .header("Authorization", auth(&self.token_id, secret.expose()));
        // reqwest errors carry the URL; drop it (paths are ours, never secrets,
        // but the policy is to print only what we chose to print).
        let failed = |e: reqwest::Error| match e.is_timeout() {
            true => Failure::Timeout,
            false => Failure::Transport(http::describe(&e.without_url())),
        };
        let resp = req.send().await.map_err(failed)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(failed)?;
        Ok(Answer { status, body })
    }

    /// Count one call by its outcome.
    pub fn record(&self, op: &'static str, outcome: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.outside_call(self.system, op, outcome);
        }
    }

    /// `once`, retried with backoff while `retry` says the error is worth it.
    pub async fn retried<T, E, F, Fut>(&self, once: F, retry: impl FnMut(&E) -> bool) -> Result<T, E>
    where
        E: Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let system = self.system;
        once.retry(http::retry_policy())
            .when(retry)
            .notify(|e, d| tracing::debug!(error = %e, delay = ?d, system, "retrying call"))
            .await
    }
}
