//! Nginx Proxy Manager REST API: token login with identity/secret, renewal
//! before the one-day expiry, proxy-host CRUD, the `{"error": {code, message}}`
//! envelope. The ownership mark lives in the host's `meta` object.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{config::SecretSource, http, metrics::Metrics};

/// Key of our mark in a proxy host's `meta`.
pub const META_MARK: &str = "homelab_operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{server}: {op}: HTTP {status}: {message}")]
    Api {
        server: String,
        op: &'static str,
        status: u16,
        message: String,
    },
    #[error("{server}: {op}: {message}")]
    Transport { server: String, op: &'static str, message: String },
    #[error("{server}: {op}: {message}")]
    Decode { server: String, op: &'static str, message: String },
    #[error("credentials: {0}")]
    Credentials(String),
}

impl Error {
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Api { status, .. } => *status >= 500,
            _ => false,
        }
    }
    pub fn is_permission(&self) -> bool {
        matches!(self, Error::Api { status: 401 | 403, .. } | Error::Credentials(_))
    }
}

/// A proxy host as the operator wants it (the fields it manages).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HostSpec {
    pub domain_names: Vec<String>,
    pub forward_scheme: String,
    pub forward_host: String,
    pub forward_port: u16,
    /// An integer id, or `"new"` to request a Let's Encrypt certificate.
    pub certificate_id: Value,
    pub ssl_forced: bool,
    pub hsts_enabled: bool,
    pub http2_support: bool,
    pub block_exploits: bool,
    pub caching_enabled: bool,
    pub allow_websocket_upgrade: bool,
    pub access_list_id: u64,
    pub advanced_config: String,
    pub enabled: bool,
    pub meta: Value,
}

/// A proxy host as NPM reports it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ProxyHost {
    pub id: u64,
    pub domain_names: Vec<String>,
    pub forward_scheme: String,
    pub forward_host: String,
    pub forward_port: u16,
    #[serde(default)]
    pub certificate_id: Value,
    #[serde(default)]
    pub ssl_forced: bool,
    #[serde(default)]
    pub hsts_enabled: bool,
    #[serde(default)]
    pub http2_support: bool,
    #[serde(default)]
    pub block_exploits: bool,
    #[serde(default)]
    pub caching_enabled: bool,
    #[serde(default)]
    pub allow_websocket_upgrade: bool,
    #[serde(default)]
    pub access_list_id: u64,
    #[serde(default)]
    pub advanced_config: String,
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub meta: Value,
}

impl ProxyHost {
    pub fn mark(&self) -> Option<&str> {
        self.meta.get(META_MARK).and_then(|v| v.as_str())
    }
    /// Whether nginx loaded the config NPM wrote (`meta.nginx_online`), with its error.
    pub fn nginx(&self) -> (bool, Option<String>) {
        (
            self.meta.get("nginx_online").and_then(|v| v.as_bool()).unwrap_or(true),
            self.meta.get("nginx_err").and_then(|v| v.as_str()).map(str::to_string),
        )
    }
}

struct Token {
    value: String,
    expires: jiff::Timestamp,
}

pub struct Npm {
    http: reqwest::Client,
    base: String,
    identity: String,
    secret: SecretSource,
    token: tokio::sync::Mutex<Option<Token>>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Npm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Npm")
            .field("base", &self.base)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Renew when less than this is left of the token's life.
const RENEW_BEFORE: Duration = Duration::from_secs(3600);

impl Npm {
    pub fn new(
        url: &url::Url,
        identity: &str,
        secret: SecretSource,
        timeout: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, http::BuildError> {
        Ok(Self {
            http: http::client(&crate::config::TlsTrust::System, timeout)?,
            base: format!("{}/api", url.as_str().trim_end_matches('/')),
            identity: identity.to_string(),
            secret,
            token: tokio::sync::Mutex::new(None),
            metrics,
        })
    }

    fn count(&self, op: &'static str, outcome: &'static str) {
        if let Some(m) = &self.metrics {
            m.outside_call("npm", op, outcome);
        }
    }

    async fn send(&self, op: &'static str, req: reqwest::RequestBuilder) -> Result<Value, Error> {
        let resp = req.send().await.map_err(|e| {
            self.count(op, "transient_error");
            Error::Transport {
                server: self.base.clone(),
                op,
                message: e.without_url().to_string(),
            }
        })?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            self.count(op, "ok");
            return Ok(body);
        }
        self.count(op, if status >= 500 { "transient_error" } else { "error" });
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {status}"));
        Err(Error::Api {
            server: self.base.clone(),
            op,
            status,
            message,
        })
    }

    async fn login(&self) -> Result<Token, Error> {
        let secret = self.secret.load("secret").map_err(|e| Error::Credentials(e.to_string()))?;
        let body = json!({"identity": self.identity, "secret": secret.expose()});
        // NPM answers bad credentials with a 400; to us that is a permission problem.
        let v = match self
            .send("login", self.http.post(format!("{}/tokens", self.base)).json(&body))
            .await
        {
            Err(Error::Api {
                server,
                op,
                status: 400,
                message,
            }) => {
                return Err(Error::Api {
                    server,
                    op,
                    status: 401,
                    message,
                });
            }
            other => other?,
        };
        token_from(&self.base, "login", &v)
    }

    /// A valid token: the cached one, renewed before it expires, or a fresh login.
    async fn token(&self) -> Result<String, Error> {
        let mut cached = self.token.lock().await;
        let now = jiff::Timestamp::now();
        if let Some(t) = cached.as_ref() {
            if t.expires > now + RENEW_BEFORE {
                return Ok(t.value.clone());
            }
            if t.expires > now {
                let renewed = self
                    .send("renew_token", self.http.get(format!("{}/tokens", self.base)).bearer_auth(&t.value))
                    .await;
                if let Ok(v) = renewed {
                    let t = token_from(&self.base, "renew_token", &v)?;
                    let value = t.value.clone();
                    *cached = Some(t);
                    return Ok(value);
                }
            }
        }
        let t = self.login().await?;
        let value = t.value.clone();
        *cached = Some(t);
        Ok(value)
    }

    /// An authenticated call; a token the server no longer accepts is replaced once.
    async fn call(&self, op: &'static str, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, Error> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(&token);
            if let Some(b) = body {
                req = req.json(b);
            }
            match self.send(op, req).await {
                // Expired (400) or refused (403) tokens: the server acted on nothing, so retrying is safe.
                Err(Error::Api {
                    status: 400 | 403,
                    message,
                    ..
                }) if attempt == 0 && (message.contains("Token has expired") || message == "Permission Denied") => {
                    *self.token.lock().await = None;
                }
                other => return other,
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, op: &'static str, v: Value) -> Result<T, Error> {
        serde_json::from_value(v).map_err(|e| Error::Decode {
            server: self.base.clone(),
            op,
            message: e.to_string(),
        })
    }

    pub async fn list(&self) -> Result<Vec<ProxyHost>, Error> {
        let v = self
            .call("list_proxy_hosts", reqwest::Method::GET, "/nginx/proxy-hosts", None)
            .await?;
        self.decode("list_proxy_hosts", v)
    }

    pub async fn get(&self, id: u64) -> Result<ProxyHost, Error> {
        let v = self
            .call("get_proxy_host", reqwest::Method::GET, &format!("/nginx/proxy-hosts/{id}"), None)
            .await?;
        self.decode("get_proxy_host", v)
    }

    pub async fn create(&self, spec: &HostSpec) -> Result<ProxyHost, Error> {
        let body = serde_json::to_value(spec).expect("spec serializes");
        let v = self
            .call("create_proxy_host", reqwest::Method::POST, "/nginx/proxy-hosts", Some(&body))
            .await?;
        self.decode("create_proxy_host", v)
    }

    pub async fn update(&self, id: u64, spec: &HostSpec) -> Result<ProxyHost, Error> {
        let body = serde_json::to_value(spec).expect("spec serializes");
        let v = self
            .call(
                "update_proxy_host",
                reqwest::Method::PUT,
                &format!("/nginx/proxy-hosts/{id}"),
                Some(&body),
            )
            .await?;
        self.decode("update_proxy_host", v)
    }

    pub async fn delete(&self, id: u64) -> Result<(), Error> {
        self.call(
            "delete_proxy_host",
            reqwest::Method::DELETE,
            &format!("/nginx/proxy-hosts/{id}"),
            None,
        )
        .await
        .map(|_| ())
    }
}

fn token_from(server: &str, op: &'static str, v: &Value) -> Result<Token, Error> {
    let value = v["token"].as_str().ok_or_else(|| Error::Decode {
        server: server.into(),
        op,
        message: "no token in the answer (2FA users are not supported)".into(),
    })?;
    let expires = v["expires"]
        .as_str()
        .and_then(|e| e.parse::<jiff::Timestamp>().ok())
        .ok_or_else(|| Error::Decode {
            server: server.into(),
            op,
            message: format!("bad expires {:?}", v["expires"]),
        })?;
    Ok(Token {
        value: value.to_string(),
        expires,
    })
}

/// The proxy-host operations the ProxyHost reconciler needs.
pub trait ProxyApi: Send + Sync {
    fn list(&self) -> impl std::future::Future<Output = Result<Vec<ProxyHost>, Error>> + Send;
    fn create(&self, spec: &HostSpec) -> impl std::future::Future<Output = Result<ProxyHost, Error>> + Send;
    fn update(&self, id: u64, spec: &HostSpec) -> impl std::future::Future<Output = Result<ProxyHost, Error>> + Send;
    fn delete(&self, id: u64) -> impl std::future::Future<Output = Result<(), Error>> + Send;
}

impl ProxyApi for Npm {
    async fn list(&self) -> Result<Vec<ProxyHost>, Error> {
        Npm::list(self).await
    }
    async fn create(&self, spec: &HostSpec) -> Result<ProxyHost, Error> {
        Npm::create(self, spec).await
    }
    async fn update(&self, id: u64, spec: &HostSpec) -> Result<ProxyHost, Error> {
        Npm::update(self, id, spec).await
    }
    async fn delete(&self, id: u64) -> Result<(), Error> {
        Npm::delete(self, id).await
    }
}
