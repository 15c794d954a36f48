//! The operator's config file: named endpoints per outside system.
//! Secrets are never inline; each is read from a file (a mounted Secret) or an
//! environment variable, and every type holding one redacts itself.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use clap::Args;
use serde::Deserialize;

pub mod notifications;

pub use notifications::{Channel, ChannelKind, EmailChannel, SmtpSecurity};

/// The environment variable that may name the config file.
pub const CONFIG_ENV: &str = "HOMELAB_OPERATOR_CONFIG";

/// The `--config FILE` flag every command that reaches outside systems takes.
#[derive(Args, Debug)]
pub struct ConfigArg {
    /// Operator config file.
    #[arg(long, env = CONFIG_ENV)]
    pub config: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config file {path}: {key}: {message}")]
    Invalid { path: String, key: String, message: String },
    #[error("{key}: {message}")]
    Secret { key: String, message: String },
}

/// A secret value. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; call only where it goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a secret comes from: a file or an environment variable, never the config itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    pub(crate) fn from_pair(key: &str, file: Option<PathBuf>, env: Option<String>) -> Result<Self, String> {
        match (file, env) {
            (Some(f), None) => Ok(SecretSource::File(f)),
            (None, Some(e)) => Ok(SecretSource::Env(e)),
            (Some(_), Some(_)) => Err(format!("set only one of {key}File and {key}Env")),
            (None, None) => Err(format!("missing {key}File or {key}Env (secrets are never inline)")),
        }
    }

    /// Read the secret now (files are re-read so rotated Secrets take effect).
    pub fn load(&self, key: &str) -> Result<SecretString, ConfigError> {
        let raw = match self {
            SecretSource::File(p) => std::fs::read_to_string(p).map_err(|e| ConfigError::Secret {
                key: key.to_string(),
                message: format!("cannot read {}: {e}", p.display()),
            })?,
            SecretSource::Env(v) => std::env::var(v).map_err(|_| ConfigError::Secret {
                key: key.to_string(),
                message: format!("environment variable {v} is not set"),
            })?,
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(ConfigError::Secret {
                key: key.to_string(),
                message: "secret is empty".into(),
            });
        }
        Ok(SecretString::new(trimmed))
    }
}

/// How the client checks a server's TLS certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsTrust {
    /// The system's web PKI roots.
    System,
    /// A PEM CA bundle.
    CaFile(PathBuf),
    /// SHA-256 fingerprint of the server's leaf certificate (self-signed Proxmox).
    Fingerprint(String),
    /// No verification at all; only when the config says `insecureSkipTlsVerify: true`.
    InsecureSkipVerify,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxmoxEndpoint {
    pub name: String,
    pub url: url::Url,
    pub token_id: String,
    pub token_secret: SecretSource,
    pub tls: TlsTrust,
    /// Per-call timeout.
    pub timeout: std::time::Duration,
    /// How long after a QEMU guest starts its agent is first asked for addresses.
    pub agent_boot_grace: std::time::Duration,
}

/// A Proxmox Backup Server (`pbs:` section). Tokens join id and secret with `:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PbsEndpoint {
    pub name: String,
    pub url: url::Url,
    /// `USER@REALM!TOKENNAME`.
    pub token_id: String,
    pub token_secret: SecretSource,
    pub tls: TlsTrust,
    pub timeout: std::time::Duration,
}

/// Default `agentBootGraceSeconds`: a cloud image boots and starts qemu-guest-agent in about this long.
pub const AGENT_BOOT_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// A DNS server the DnsRecord reconciler writes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsEndpoint {
    Technitium {
        url: url::Url,
        token: SecretSource,
        timeout: std::time::Duration,
    },
    PowerDns {
        url: url::Url,
        api_key: SecretSource,
        server_id: String,
        timeout: std::time::Duration,
    },
    Rfc2136 {
        server: String,
        tsig_key_name: String,
        tsig_algorithm: String,
        tsig_secret: SecretSource,
        timeout: std::time::Duration,
    },
}

/// A reverse proxy the ProxyHost reconciler writes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyEndpoint {
    pub url: url::Url,
    pub identity: String,
    pub secret: SecretSource,
    pub timeout: std::time::Duration,
}

#[derive(Clone, Debug, Default)]
pub struct Config {
    pub path: String,
    pub proxmox: BTreeMap<String, ProxmoxEndpoint>,
    pub dns: BTreeMap<String, DnsEndpoint>,
    pub proxy: BTreeMap<String, ProxyEndpoint>,
    pub pbs: BTreeMap<String, PbsEndpoint>,
    /// Notification channels by name.
    pub notifications: BTreeMap<String, Channel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    proxmox: BTreeMap<String, RawProxmox>,
    #[serde(default)]
    pbs: BTreeMap<String, RawPbs>,
    #[serde(default)]
    dns: BTreeMap<String, RawDns>,
    #[serde(default)]
    proxy: BTreeMap<String, RawProxy>,
    #[serde(default)]
    notifications: BTreeMap<String, serde_yaml_ng::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProxmox {
    url: String,
    token_id: String,
    token_secret_file: Option<PathBuf>,
    token_secret_env: Option<String>,
    fingerprint: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    timeout_seconds: Option<u64>,
    agent_boot_grace_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPbs {
    url: String,
    token_id: String,
    token_secret_file: Option<PathBuf>,
    token_secret_env: Option<String>,
    fingerprint: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    timeout_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum RawDns {
    #[serde(rename_all = "camelCase")]
    Technitium {
        url: String,
        token_file: Option<PathBuf>,
        token_env: Option<String>,
        timeout_seconds: Option<u64>,
    },
    #[serde(rename_all = "camelCase")]
    Powerdns {
        url: String,
        api_key_file: Option<PathBuf>,
        api_key_env: Option<String>,
        server_id: Option<String>,
        timeout_seconds: Option<u64>,
    },
    #[serde(rename_all = "camelCase")]
    Rfc2136 {
        server: String,
        tsig_key_name: String,
        tsig_algorithm: Option<String>,
        tsig_secret_file: Option<PathBuf>,
        tsig_secret_env: Option<String>,
        timeout_seconds: Option<u64>,
    },
}

#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum RawProxy {
    #[serde(rename = "nginx-proxy-manager", rename_all = "camelCase")]
    NginxProxyManager {
        url: String,
        identity: String,
        secret_file: Option<PathBuf>,
        secret_env: Option<String>,
        timeout_seconds: Option<u64>,
    },
}

impl Config {
    /// Load and validate the config file; every error names the file and the key.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: p.clone(), source })?;
        Self::parse(&p, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        let sections = || -> Result<Config, Invalid> {
            Ok(Config {
                path: path.to_string(),
                proxmox: section("proxmox", raw.proxmox, proxmox_endpoint)?,
                pbs: section("pbs", raw.pbs, pbs_endpoint)?,
                dns: section("dns", raw.dns, dns_endpoint)?,
                proxy: section("proxy", raw.proxy, proxy_endpoint)?,
                notifications: notifications::parse(raw.notifications)?,
            })
        };
        sections().map_err(|(key, message)| ConfigError::Invalid {
            path: path.to_string(),
            key,
            message,
        })
    }

    pub fn proxmox(&self, name: &str) -> Option<&ProxmoxEndpoint> {
        self.proxmox.get(name)
    }
}

/// A config error: the key it is about and what is wrong.
type Invalid = (String, String);

/// Every endpoint of one section, each built by `build(key, name, raw)`.
fn section<R, T>(
    prefix: &str,
    raw: BTreeMap<String, R>,
    build: fn(&str, &str, R) -> Result<T, Invalid>,
) -> Result<BTreeMap<String, T>, Invalid> {
    raw.into_iter()
        .map(|(name, r)| {
            let key = format!("{prefix}.{name}");
            build(&key, &name, r).map(|ep| (name, ep))
        })
        .collect()
}

fn seconds(t: Option<u64>, default: u64) -> std::time::Duration {
    std::time::Duration::from_secs(t.unwrap_or(default).max(1))
}

fn parse_url(key: &str, url: &str) -> Result<url::Url, Invalid> {
    url::Url::parse(url).map_err(|e| (format!("{key}.url"), format!("{e}: {url:?}")))
}

fn secret(key: &str, field: &str, file: Option<PathBuf>, env: Option<String>) -> Result<SecretSource, Invalid> {
    SecretSource::from_pair(field, file, env).map_err(|m| (key.to_string(), m))
}

fn proxmox_endpoint(key: &str, name: &str, r: RawProxmox) -> Result<ProxmoxEndpoint, Invalid> {
    let (url, tls) = proxmox_api_endpoint(key, &r.url, &r.token_id, r.fingerprint, r.ca_file, r.insecure_skip_tls_verify)?;
    Ok(ProxmoxEndpoint {
        name: name.to_string(),
        url,
        token_id: r.token_id,
        token_secret: secret(key, "tokenSecret", r.token_secret_file, r.token_secret_env)?,
        tls,
        timeout: seconds(r.timeout_seconds, 30),
        agent_boot_grace: r.agent_boot_grace_seconds.map_or(AGENT_BOOT_GRACE, std::time::Duration::from_secs),
    })
}

fn pbs_endpoint(key: &str, name: &str, r: RawPbs) -> Result<PbsEndpoint, Invalid> {
    let (url, tls) = proxmox_api_endpoint(key, &r.url, &r.token_id, r.fingerprint, r.ca_file, r.insecure_skip_tls_verify)?;
    Ok(PbsEndpoint {
        name: name.to_string(),
        url,
        token_id: r.token_id,
        token_secret: secret(key, "tokenSecret", r.token_secret_file, r.token_secret_env)?,
        tls,
        timeout: seconds(r.timeout_seconds, 30),
    })
}

fn dns_endpoint(key: &str, _name: &str, r: RawDns) -> Result<DnsEndpoint, Invalid> {
    Ok(match r {
        RawDns::Technitium {
            url,
            token_file,
            token_env,
            timeout_seconds,
        } => DnsEndpoint::Technitium {
            url: parse_url(key, &url)?,
            token: secret(key, "token", token_file, token_env)?,
            timeout: seconds(timeout_seconds, 10),
        },
        RawDns::Powerdns {
            url,
            api_key_file,
            api_key_env,
            server_id,
            timeout_seconds,
        } => DnsEndpoint::PowerDns {
            url: parse_url(key, &url)?,
            api_key: secret(key, "apiKey", api_key_file, api_key_env)?,
            server_id: server_id.unwrap_or_else(|| "localhost".into()),
            timeout: seconds(timeout_seconds, 10),
        },
        RawDns::Rfc2136 {
            server,
            tsig_key_name,
            tsig_algorithm,
            tsig_secret_file,
            tsig_secret_env,
            timeout_seconds,
        } => {
            if server.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                return Err((format!("{key}.server"), format!("expected HOST:PORT, got {server:?}")));
            }
            let tsig_algorithm = tsig_algorithm.unwrap_or_else(|| "hmac-sha256".into());
            if !matches!(tsig_algorithm.as_str(), "hmac-sha256" | "hmac-sha384" | "hmac-sha512") {
                return Err((
                    format!("{key}.tsigAlgorithm"),
                    format!("expected hmac-sha256, hmac-sha384 or hmac-sha512, got {tsig_algorithm:?}"),
                ));
            }
            DnsEndpoint::Rfc2136 {
                server,
                tsig_key_name,
                tsig_algorithm,
                tsig_secret: secret(key, "tsigSecret", tsig_secret_file, tsig_secret_env)?,
                timeout: seconds(timeout_seconds, 10),
            }
        }
    })
}

fn proxy_endpoint(key: &str, _name: &str, r: RawProxy) -> Result<ProxyEndpoint, Invalid> {
    let RawProxy::NginxProxyManager {
        url,
        identity,
        secret_file,
        secret_env,
        timeout_seconds,
    } = r;
    Ok(ProxyEndpoint {
        url: parse_url(key, &url)?,
        identity,
        secret: secret(key, "secret", secret_file, secret_env)?,
        timeout: seconds(timeout_seconds, 30),
    })
}

/// URL, token id and TLS trust of a Proxmox VE or Backup Server endpoint;
/// errors carry the key they are about.
fn proxmox_api_endpoint(
    key: &str,
    url: &str,
    token_id: &str,
    fingerprint: Option<String>,
    ca_file: Option<PathBuf>,
    insecure: bool,
) -> Result<(url::Url, TlsTrust), (String, String)> {
    let parsed = url::Url::parse(url).map_err(|e| (format!("{key}.url"), format!("{e}: {url:?}")))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err((format!("{key}.url"), "scheme must be https (or http)".into()));
    }
    if !token_id.contains('!') || !token_id.contains('@') {
        return Err((format!("{key}.tokenId"), format!("expected USER@REALM!TOKENNAME, got {token_id:?}")));
    }
    let tls = match (fingerprint, ca_file, insecure) {
        (Some(fp), None, false) => TlsTrust::Fingerprint(normalize_fingerprint(&fp).map_err(|m| (format!("{key}.fingerprint"), m))?),
        (None, Some(ca), false) => TlsTrust::CaFile(ca),
        (None, None, true) => TlsTrust::InsecureSkipVerify,
        (None, None, false) => TlsTrust::System,
        _ => {
            return Err((
                key.to_string(),
                "set at most one of fingerprint, caFile, insecureSkipTlsVerify".into(),
            ));
        }
    };
    Ok((parsed, tls))
}

/// Accept `AA:BB:…` or plain hex in either case; store as lower-case hex without colons.
pub fn normalize_fingerprint(fp: &str) -> Result<String, String> {
    let hex: String = fp.chars().filter(|c| *c != ':').collect::<String>().to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("expected a SHA-256 fingerprint (32 hex bytes, colons optional)".into());
    }
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";

    #[test]
    fn parses_endpoint_with_fingerprint() {
        let c = Config::parse(
            "c.yaml",
            &format!(
                "proxmox:\n  default:\n    url: https://pve.lan:8006\n    tokenId: operator@pve!homelab\n    tokenSecretEnv: PVE_TOKEN\n    fingerprint: \"{FP}\"\n"
            ),
        )
        .unwrap();
        let ep = c.proxmox("default").unwrap();
        assert_eq!(ep.token_secret, SecretSource::Env("PVE_TOKEN".into()));
        assert!(matches!(&ep.tls, TlsTrust::Fingerprint(f) if f.starts_with("aabbcc")));
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = Config::parse(
            "c.yaml",
            "proxmox:\n  default:\n    url: https://x:8006\n    tokenId: nope\n    tokenSecretEnv: X\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "config file c.yaml: proxmox.default.tokenId: expected USER@REALM!TOKENNAME, got \"nope\""
        );
        let e = Config::parse("c.yaml", "proxmox:\n  default:\n    url: https://x:8006\n    tokenId: a@pve!b\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("proxmox.default: missing tokenSecretFile or tokenSecretEnv"), "{e}");
        let e = Config::parse(
            "c.yaml",
            "proxmox:\n  default:\n    url: https://x:8006\n    tokenId: a@pve!b\n    tokenSecret: inline\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("config file c.yaml: ") && e.contains("tokenSecret"), "{e}");
        let e = Config::load(Path::new("/nonexistent/homelab.yaml")).unwrap_err().to_string();
        assert!(e.starts_with("config file /nonexistent/homelab.yaml: "), "{e}");
    }

    #[test]
    fn secrets_redact() {
        let s = SecretString::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }

    #[test]
    fn dns_endpoints_parse_and_refuse_mistakes() {
        let c = Config::parse(
            "c.yaml",
            "dns:\n  pdns: {type: powerdns, url: http://pdns:8081, apiKeyFile: /s/key}\n  bind: {type: rfc2136, server: 10.0.0.53:53, tsigKeyName: k8s, tsigSecretEnv: TSIG}\n",
        )
        .unwrap();
        assert!(matches!(&c.dns["pdns"], DnsEndpoint::PowerDns { server_id, .. } if server_id == "localhost"));
        assert!(matches!(&c.dns["bind"], DnsEndpoint::Rfc2136 { tsig_algorithm, .. } if tsig_algorithm == "hmac-sha256"));
        let e = Config::parse(
            "c.yaml",
            "dns:\n  bind: {type: rfc2136, server: dns.lan, tsigKeyName: k, tsigSecretEnv: T}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("dns.bind.server: expected HOST:PORT"), "{e}");
        let e = Config::parse("c.yaml", "dns:\n  p: {type: powerdns, url: http://x, apiKey: inline}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apiKey"), "{e}");
    }

    #[test]
    fn pbs_endpoints_parse_like_proxmox_ones() {
        let c = Config::parse(
            "c.yaml",
            &format!("pbs:\n  main: {{url: https://pbs.lan:8007, tokenId: operator@pbs!homelab, tokenSecretFile: /s/pbs, fingerprint: \"{FP}\"}}\n"),
        )
        .unwrap();
        let ep = &c.pbs["main"];
        assert_eq!((ep.token_id.as_str(), ep.url.port()), ("operator@pbs!homelab", Some(8007)));
        assert!(matches!(&ep.tls, TlsTrust::Fingerprint(f) if f.len() == 64));
        let e = Config::parse(
            "c.yaml",
            "pbs:\n  main: {url: https://pbs:8007, tokenId: nope, tokenSecretEnv: T}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("pbs.main.tokenId: expected USER@REALM!TOKENNAME"), "{e}");
        let e = Config::parse("c.yaml", "pbs:\n  main: {url: https://pbs:8007, tokenId: a@pbs!b}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pbs.main: missing tokenSecretFile or tokenSecretEnv"), "{e}");
    }

    #[test]
    fn later_sections_parse() {
        let c = Config::parse(
            "c.yaml",
            "proxy:\n  default: {type: nginx-proxy-manager, url: http://npm:81, identity: admin@example.com, secretFile: /s}\n",
        )
        .unwrap();
        assert_eq!(c.proxy.len(), 1);
        let e = Config::parse(
            "c.yaml",
            "proxy:\n  default: {type: nginx-proxy-manager, url: http://npm:81, identity: a, secret: inline}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("secret"), "{e}");
    }
}
