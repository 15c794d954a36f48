//! A MonitorTarget's spec, with its target resolved and its Secret values
//! read, as a ready-to-run probe. Pure: the controller does the reading.

use std::{collections::BTreeMap, hash::Hash, time::Duration};

use super::{
    checks::{DnsProbe, HttpProbe, Probe, TcpProbe, TlsProbe, tls_config},
    scheduler::MonitorConfig,
    state::Settings,
};
use crate::api::{MonitorTargetSpec, SecretKeyRef};

/// Secret values by (name, key), as the controller read them.
pub type Secrets = BTreeMap<(String, String), String>;

/// Every Secret key a spec refers to.
pub fn secret_refs(spec: &MonitorTargetSpec) -> Vec<SecretKeyRef> {
    let mut out: Vec<SecretKeyRef> = vec![];
    if let Some(h) = &spec.http {
        out.extend(h.headers.iter().filter_map(|x| x.value_from.clone()));
        out.extend(h.ca_secret.clone());
    }
    if let Some(t) = &spec.tls {
        out.extend(t.ca_secret.clone());
    }
    out
}

fn secret(secrets: &Secrets, r: &SecretKeyRef) -> Result<String, String> {
    secrets
        .get(&(r.name.clone(), r.key.clone()))
        .cloned()
        .ok_or_else(|| format!("Secret {}: key {:?} not found", r.name, r.key))
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .user_agent(concat!("homelab-operator/", env!("CARGO_PKG_VERSION"), " (monitor)"))
}

fn default_client() -> Result<reqwest::Client, String> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    let c = builder().build().map_err(|e| e.to_string())?;
    Ok(CLIENT.get_or_init(|| c).clone())
}

/// A client of its own: a private CA, no verification, or no redirects.
fn custom_client(h: &crate::api::HttpCheck, secrets: &Secrets) -> Result<reqwest::Client, String> {
    let policy = if h.follow_redirects {
        reqwest::redirect::Policy::limited(10)
    } else {
        reqwest::redirect::Policy::none()
    };
    let mut b = builder().redirect(policy);
    if let Some(ca) = &h.ca_secret {
        let pem = secret(secrets, ca)?;
        for c in reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| format!("caSecret: {e}"))? {
            b = b.add_root_certificate(c);
        }
    }
    if !h.verify_tls {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| e.to_string())
}

/// A probe, its check type and what it aims at (as shown in status).
type Built = (Probe, &'static str, String);

/// Build the probe; `host` is the resolved target address or domain, when `target` is set.
pub fn build(spec: &MonitorTargetSpec, host: Option<&str>, secrets: &Secrets, generation: Option<i64>) -> Result<MonitorConfig, String> {
    let need_host = |fixed: &Option<String>| -> Result<String, String> {
        fixed
            .clone()
            .or_else(|| host.map(str::to_string))
            .ok_or_else(|| "the target has no address yet".to_string())
    };
    let (probe, check_type, target) = match (&spec.http, &spec.tcp, &spec.dns, &spec.tls) {
        (Some(h), ..) => http_probe(h, need_host(&None).ok(), secrets)?,
        (_, Some(t), ..) => {
            let host = need_host(&t.host)?;
            let target = format!("{host}:{}", t.port);
            let probe = TcpProbe {
                host,
                port: t.port,
                send: t.send.clone(),
                expect: t.expect.clone(),
            };
            (Probe::Tcp(probe), "tcp", target)
        }
        (_, _, Some(d), _) => dns_probe(d)?,
        (_, _, _, Some(t)) => {
            let host = need_host(&t.host)?;
            let ca = t.ca_secret.as_ref().map(|r| secret(secrets, r)).transpose()?;
            let config = tls_config(ca.as_deref().map(str::as_bytes))?;
            let target = format!("{host}:{}", t.port);
            let probe = TlsProbe {
                host,
                port: t.port,
                warn_days: t.warn_days,
                config,
            };
            (Probe::Tls(probe), "tls", target)
        }
        _ => return Err("set exactly one check: http, tcp, dns or tls".into()),
    };
    let maintenance = spec
        .policy
        .maintenance
        .iter()
        .map(|w| crate::cron::parse("maintenance.schedule", &w.schedule).map(|c| (c, Duration::from_secs(w.duration_minutes as u64 * 60))))
        .collect::<Result<Vec<_>, String>>()?;
    let notify = spec.policy.notify.as_ref();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
    host.hash(&mut h);
    secrets.hash(&mut h);
    Ok(MonitorConfig {
        probe: std::sync::Arc::new(probe),
        check_type,
        target,
        interval: Duration::from_secs(spec.policy.interval_seconds as u64),
        timeout: Duration::from_secs(spec.policy.timeout_seconds as u64),
        settings: Settings {
            failure_threshold: spec.policy.failure_threshold,
            success_threshold: spec.policy.success_threshold,
            cooldown: notify
                .map(|n| n.cooldown_minutes)
                .filter(|m| *m > 0)
                .map(|m| Duration::from_secs(m as u64 * 60)),
            notify_recovery: notify.is_none_or(|n| n.notify_recovery),
        },
        channels: notify.map(|n| n.channels.clone()).unwrap_or_default(),
        maintenance,
        paused: spec.policy.paused,
        guest: spec.target.as_ref().filter(|t| t.kind == "ProxmoxGuest").map(|t| t.name.clone()),
        generation,
        fingerprint: std::hash::Hasher::finish(&h),
    })
}

/// The URL (given, or made from the target's host), the client and the headers.
fn http_probe(h: &crate::api::HttpCheck, host: Option<String>, secrets: &Secrets) -> Result<Built, String> {
    let url = match &h.url {
        Some(u) => u.clone(),
        None => {
            let scheme = h.scheme.as_deref().unwrap_or("http");
            let host = host.ok_or_else(|| "the target has no address yet".to_string())?;
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            let port = h.port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{host}{port}{}", h.path.as_deref().unwrap_or("/"))
        }
    };
    url::Url::parse(&url).map_err(|e| format!("url {url:?}: {e}"))?;
    let client = match h.ca_secret.is_none() && h.verify_tls && h.follow_redirects {
        // Most monitors: one shared client (its root store and pool), not one per monitor.
        true => default_client()?,
        false => custom_client(h, secrets)?,
    };
    let headers = h
        .headers
        .iter()
        .map(|x| match (&x.value, &x.value_from) {
            (Some(v), _) => Ok((x.name.clone(), v.clone())),
            (None, Some(r)) => secret(secrets, r).map(|v| (x.name.clone(), v)),
            (None, None) => Err(format!("header {}: set value or valueFrom", x.name)),
        })
        .collect::<Result<Vec<_>, String>>()?;
    let body_regex = h.body_regex.as_deref().map(regex::Regex::new).transpose();
    let probe = HttpProbe {
        client,
        method: reqwest::Method::from_bytes(h.method.as_bytes()).map_err(|e| e.to_string())?,
        headers,
        expected_status: h.expected_status.clone(),
        body_contains: h.body_contains.clone(),
        body_regex: body_regex.map_err(|e| format!("bodyRegex: {e}"))?,
        json: h.json.as_ref().map(|j| (j.pointer.clone(), j.equals.clone())),
        max_response: h.max_response_ms.map(|ms| Duration::from_millis(ms as u64)),
        url: url.clone(),
    };
    // Never show credentials a URL may carry.
    let shown = url::Url::parse(&url).map(|mut u| {
        let _ = u.set_password(None);
        let _ = u.set_username("");
        u.to_string()
    });
    Ok((Probe::Http(probe), "http", shown.unwrap_or(url)))
}

fn dns_probe(d: &crate::api::DnsCheck) -> Result<Built, String> {
    let server = if d.server.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        d.server.clone()
    } else {
        format!("{}:53", d.server)
    };
    let record_type = d.record_type.parse().map_err(|e| format!("recordType: {e:?}"))?;
    let rcode = match d.rcode.as_str() {
        "NXDOMAIN" => hickory_proto::op::ResponseCode::NXDomain,
        "SERVFAIL" => hickory_proto::op::ResponseCode::ServFail,
        "REFUSED" => hickory_proto::op::ResponseCode::Refused,
        _ => hickory_proto::op::ResponseCode::NoError,
    };
    let target = format!("{} {}@{server}", d.name, d.record_type);
    let probe = DnsProbe {
        server,
        name: d.name.clone(),
        record_type,
        expected: d.expected.clone(),
        rcode,
    };
    Ok((Probe::Dns(probe), "dns", target))
}
