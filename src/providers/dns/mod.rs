//! DNS servers behind one small trait: PowerDNS (HTTP API) and any RFC 2136
//! server with TSIG (BIND, Knot, Technitium, Windows DNS).

pub mod powerdns;
pub mod rfc2136;
pub mod technitium;

use std::future::Future;

/// One RRset as the server has it. Names are absolute with the trailing dot;
/// values are in presentation format (`10.0.0.1`, `target.example.`, `"text"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordSet {
    pub name: String,
    pub rtype: String,
    pub ttl: u32,
    pub values: Vec<String>,
    /// The ownership mark stored with the RRset (a comment, or a TXT registry record).
    pub mark: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{server}: {op}: HTTP {status}: {message}")]
    Api {
        server: String,
        op: &'static str,
        status: u16,
        message: String,
    },
    #[error("{server}: {op}: {rcode}{}", .message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Rcode {
        server: String,
        op: &'static str,
        rcode: String,
        message: Option<String>,
    },
    #[error("{server}: {op}: {message}")]
    Transport { server: String, op: &'static str, message: String },
    #[error("{server}: {op}: {message}")]
    Invalid { server: String, op: &'static str, message: String },
    #[error("credentials: {0}")]
    Credentials(String),
}

impl Error {
    /// Network trouble and server-side failures are worth retrying; refusals are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } => true,
            Error::Api { status, .. } => *status >= 500,
            Error::Rcode { rcode, .. } => rcode == "SERVFAIL",
            Error::Invalid { .. } | Error::Credentials(_) => false,
        }
    }

    pub fn is_permission(&self) -> bool {
        match self {
            Error::Api { status, .. } => *status == 401 || *status == 403,
            Error::Rcode { rcode, .. } => matches!(rcode.as_str(), "NOTAUTH" | "REFUSED" | "BADSIG" | "BADKEY" | "BADTIME"),
            Error::Credentials(_) => true,
            _ => false,
        }
    }
}

/// The operations the DNS reconciler needs.
pub trait DnsApi: Send + Sync {
    /// The RRset of this name and type, with its mark, if it exists.
    fn get(&self, zone: &str, name: &str, rtype: &str) -> impl Future<Output = Result<Option<RecordSet>, Error>> + Send;
    /// Every RRset of the zone, with its mark (for `export`).
    fn list(&self, zone: &str) -> impl Future<Output = Result<Vec<RecordSet>, Error>> + Send;
    /// Replace the whole RRset (and its mark) with `set`.
    fn put(&self, zone: &str, set: &RecordSet) -> impl Future<Output = Result<(), Error>> + Send;
    /// Remove the RRset and its mark.
    fn delete(&self, zone: &str, name: &str, rtype: &str) -> impl Future<Output = Result<(), Error>> + Send;
}

/// `home.arpa` → `home.arpa.`
pub fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_ascii_lowercase()
    } else {
        format!("{}.", name.to_ascii_lowercase())
    }
}

/// A name relative to the zone (`@` for the apex) as an absolute name.
pub fn fqdn(name: &str, zone: &str) -> String {
    let zone = absolute(zone);
    match name {
        "@" | "" => zone,
        n if n.ends_with('.') => n.to_ascii_lowercase(),
        n => format!("{}.{zone}", n.to_ascii_lowercase()),
    }
}

/// The client for one `dns:` endpoint of the config.
#[derive(Clone, Debug)]
pub enum DnsClient {
    Technitium(technitium::Technitium),
    PowerDns(powerdns::PowerDns),
    Rfc2136(rfc2136::Rfc2136),
}

impl DnsClient {
    pub fn from_endpoint(
        ep: &crate::config::DnsEndpoint,
        metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    ) -> Result<Self, String> {
        use crate::config::DnsEndpoint;
        Ok(match ep {
            DnsEndpoint::Technitium { url, token, timeout } => {
                DnsClient::Technitium(technitium::Technitium::new(url, token.clone(), *timeout, metrics).map_err(|e| e.to_string())?)
            }
            DnsEndpoint::PowerDns {
                url,
                api_key,
                server_id,
                timeout,
            } => {
                DnsClient::PowerDns(powerdns::PowerDns::new(url, server_id, api_key.clone(), *timeout, metrics).map_err(|e| e.to_string())?)
            }
            DnsEndpoint::Rfc2136 {
                server,
                tsig_key_name,
                tsig_algorithm,
                tsig_secret,
                timeout,
            } => {
                let alg = rfc2136::parse_algorithm(tsig_algorithm).ok_or_else(|| format!("unsupported TSIG algorithm {tsig_algorithm}"))?;
                DnsClient::Rfc2136(rfc2136::Rfc2136::new(
                    server,
                    tsig_key_name,
                    alg,
                    tsig_secret.clone(),
                    *timeout,
                    metrics,
                ))
            }
        })
    }
}

/// One client per `dns:` endpoint of the config.
pub fn clients_from_config(
    config: &crate::config::Config,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
) -> Result<std::collections::BTreeMap<String, DnsClient>, String> {
    config
        .dns
        .iter()
        .map(|(name, ep)| {
            DnsClient::from_endpoint(ep, metrics.clone())
                .map(|c| (name.clone(), c))
                .map_err(|e| format!("dns.{name}: {e}"))
        })
        .collect()
}

impl DnsApi for DnsClient {
    async fn get(&self, zone: &str, name: &str, rtype: &str) -> Result<Option<RecordSet>, Error> {
        match self {
            DnsClient::Technitium(c) => c.get(zone, name, rtype).await,
            DnsClient::PowerDns(c) => c.get(zone, name, rtype).await,
            DnsClient::Rfc2136(c) => c.get(zone, name, rtype).await,
        }
    }
    async fn list(&self, zone: &str) -> Result<Vec<RecordSet>, Error> {
        match self {
            DnsClient::Technitium(c) => c.list(zone).await,
            DnsClient::PowerDns(c) => c.list(zone).await,
            DnsClient::Rfc2136(c) => c.list(zone).await,
        }
    }
    async fn put(&self, zone: &str, set: &RecordSet) -> Result<(), Error> {
        match self {
            DnsClient::Technitium(c) => c.put(zone, set).await,
            DnsClient::PowerDns(c) => c.put(zone, set).await,
            DnsClient::Rfc2136(c) => c.put(zone, set).await,
        }
    }
    async fn delete(&self, zone: &str, name: &str, rtype: &str) -> Result<(), Error> {
        match self {
            DnsClient::Technitium(c) => c.delete(zone, name, rtype).await,
            DnsClient::PowerDns(c) => c.delete(zone, name, rtype).await,
            DnsClient::Rfc2136(c) => c.delete(zone, name, rtype).await,
        }
    }
}
