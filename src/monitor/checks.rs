//! The four checks, each bounded by its timeout and reporting what it saw in
//! words a person can act on. HTTP clients are built once per monitor spec,
//! not per check.

use std::{sync::Arc, time::Duration};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

/// One check's result.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    pub ok: bool,
    pub latency: Duration,
    pub message: String,
    /// The certificate's end of validity (TLS checks).
    pub cert_expiry: Option<jiff::Timestamp>,
}

pub struct HttpProbe {
    pub client: reqwest::Client,
    pub url: String,
    pub method: reqwest::Method,
    pub headers: Vec<(String, String)>,
    /// Empty: 200–399.
    pub expected_status: Vec<u16>,
    pub body_contains: Option<String>,
    pub body_regex: Option<regex::Regex>,
    pub json: Option<(String, String)>,
    pub max_response: Option<Duration>,
}

pub struct TcpProbe {
    pub host: String,
    pub port: u16,
    pub send: Option<String>,
    pub expect: Option<String>,
}

pub struct DnsProbe {
    pub server: String,
    pub name: String,
    pub record_type: RecordType,
    pub expected: Vec<String>,
    pub rcode: ResponseCode,
}

pub struct TlsProbe {
    pub host: String,
    pub port: u16,
    pub warn_days: u32,
    pub config: Arc<rustls::ClientConfig>,
}

pub enum Probe {
    Http(HttpProbe),
    Tcp(TcpProbe),
    Dns(DnsProbe),
    Tls(TlsProbe),
}

impl Probe {
    /// Run once within `timeout`.
    pub async fn run(&self, timeout: Duration) -> CheckResult {
        let start = tokio::time::Instant::now();
        let outcome = tokio::time::timeout(timeout, async {
            match self {
                Probe::Http(p) => http(p).await,
                Probe::Tcp(p) => tcp(p).await,
                Probe::Dns(p) => dns(p).await,
                Probe::Tls(p) => tls(p).await,
            }
        })
        .await;
        let latency = start.elapsed();
        let (ok, message, cert_expiry) = match outcome {
            Ok(Ok((message, expiry))) => (true, message, expiry),
            Ok(Err((message, expiry))) => (false, message, expiry),
            Err(_) => (false, format!("timed out after {}s", timeout.as_secs()), None),
        };
        CheckResult {
            ok,
            latency,
            message,
            cert_expiry,
        }
    }
}

type Verdict = Result<(String, Option<jiff::Timestamp>), (String, Option<jiff::Timestamp>)>;

fn fail(m: impl Into<String>) -> Verdict {
    Err((m.into(), None))
}

/// The root cause of a reqwest error, without its URL (it may hold credentials).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(inner) = src {
        s = inner.to_string();
        src = inner.source();
    }
    s
}

async fn http(p: &HttpProbe) -> Verdict {
    let start = tokio::time::Instant::now();
    let mut req = p.client.request(p.method.clone(), &p.url);
    for (k, v) in &p.headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| (describe(e), None))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| (describe(e), None))?;
    let elapsed = start.elapsed();
    let status_ok = match p.expected_status.is_empty() {
        true => (200..400).contains(&status),
        false => p.expected_status.contains(&status),
    };
    if !status_ok {
        return fail(format!("HTTP {status}"));
    }
    if let Some(text) = &p.body_contains
        && !body.contains(text.as_str())
    {
        return fail(format!("HTTP {status}, body does not contain {text:?}"));
    }
    if let Some(re) = &p.body_regex
        && !re.is_match(&body)
    {
        return fail(format!("HTTP {status}, body does not match /{}/", re.as_str()));
    }
    if let Some((pointer, equals)) = &p.json {
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| (format!("HTTP {status}, body is not JSON: {e}"), None))?;
        let got = v.pointer(pointer);
        let matches = got.is_some_and(|g| {
            g.as_str() == Some(equals.as_str()) || serde_json::from_str::<serde_json::Value>(equals).is_ok_and(|e| &e == g)
        });
        if !matches {
            return fail(format!(
                "HTTP {status}, {pointer} is {} not {equals}",
                got.map_or("missing".into(), |g| g.to_string())
            ));
        }
    }
    if let Some(max) = p.max_response
        && elapsed > max
    {
        return fail(format!(
            "HTTP {status} in {}ms, slower than {}ms",
            elapsed.as_millis(),
            max.as_millis()
        ));
    }
    Ok((format!("HTTP {status}"), None))
}

async fn tcp(p: &TcpProbe) -> Verdict {
    let mut stream = TcpStream::connect((p.host.as_str(), p.port))
        .await
        .map_err(|e| (format!("connecting to {}:{}: {e}", p.host, p.port), None))?;
    if let Some(s) = &p.send {
        stream.write_all(s.as_bytes()).await.map_err(|e| (format!("sending: {e}"), None))?;
    }
    let Some(want) = &p.expect else {
        return Ok((format!("connected to {}:{}", p.host, p.port), None));
    };
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(want.as_str()) {
        let n = stream.read(&mut buf).await.map_err(|e| (format!("reading: {e}"), None))?;
        if n == 0 || got.len() > 64 * 1024 {
            let seen: String = String::from_utf8_lossy(&got).chars().take(80).collect();
            return fail(format!("expected {want:?}, got {seen:?}"));
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok((format!("{want:?} from {}:{}", p.host, p.port), None))
}

/// One answer's values in comparable text (`10.0.0.5`, `web.home.arpa.`, `10 mail.home.arpa.`).
fn rdata_text(r: &RData) -> String {
    match r {
        RData::TXT(t) => t
            .txt_data
            .iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect::<Vec<_>>()
            .join(""),
        other => other.to_string(),
    }
}

fn normalize(v: &str) -> String {
    v.trim().trim_end_matches('.').to_ascii_lowercase()
}

async fn dns_exchange(server: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let sock = UdpSocket::bind("0.0.0.0:0").await.map_err(|e| e.to_string())?;
    sock.connect(server).await.map_err(|e| format!("{server}: {e}"))?;
    sock.send(bytes).await.map_err(|e| format!("{server}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut buf).await.map_err(|e| format!("{server}: {e}"))?;
    buf.truncate(n);
    Ok(buf)
}

/// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`, as dig prints them.
pub fn rcode_name(rc: ResponseCode) -> String {
    format!("{rc:?}").to_ascii_uppercase()
}

async fn dns(p: &DnsProbe) -> Verdict {
    let name = Name::from_ascii(&p.name).map_err(|e| (format!("name {:?}: {e}", p.name), None))?;
    let mut q = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(name, p.record_type));
    let bytes = q.to_vec().map_err(|e| (e.to_string(), None))?;
    let answer = dns_exchange(&p.server, &bytes).await.map_err(|e| (e, None))?;
    let m = Message::from_vec(&answer).map_err(|e| (format!("undecodable answer: {e}"), None))?;
    let rcode = m.metadata.response_code;
    if rcode != p.rcode {
        return fail(format!(
            "{} {}: {} (expected {})",
            p.name,
            p.record_type,
            rcode_name(rcode),
            rcode_name(p.rcode)
        ));
    }
    let mut got: Vec<String> = m
        .answers
        .iter()
        .filter(|r| r.record_type() == p.record_type)
        .map(|r| normalize(&rdata_text(&r.data)))
        .collect();
    got.sort();
    let mut want: Vec<String> = p.expected.iter().map(|v| normalize(v)).collect();
    want.sort();
    let shown = if got.is_empty() { "no answer".to_string() } else { got.join(", ") };
    match (want.is_empty(), rcode == ResponseCode::NoError) {
        (_, false) => Ok((format!("{} {}: {}", p.name, p.record_type, rcode_name(rcode)), None)),
        (true, true) if got.is_empty() => fail(format!("{} {}: no answer", p.name, p.record_type)),
        (true, true) => Ok((format!("{} {}: {shown}", p.name, p.record_type), None)),
        (false, true) if got == want => Ok((format!("{} {}: {shown}", p.name, p.record_type), None)),
        (false, true) => fail(format!("{} {}: {shown} (expected {})", p.name, p.record_type, want.join(", "))),
    }
}

async fn tls(p: &TlsProbe) -> Verdict {
    let server_name = rustls::pki_types::ServerName::try_from(p.host.clone()).map_err(|e| (format!("host {:?}: {e}", p.host), None))?;
    let tcp = TcpStream::connect((p.host.as_str(), p.port))
        .await
        .map_err(|e| (format!("connecting to {}:{}: {e}", p.host, p.port), None))?;
    let connector = tokio_rustls::TlsConnector::from(p.config.clone());
    let stream = connector.connect(server_name, tcp).await.map_err(|e| (format!("TLS: {e}"), None))?;
    let (_, conn) = stream.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| ("TLS: no certificate".to_string(), None))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| (format!("certificate: {e}"), None))?;
    let not_after = cert.validity().not_after.timestamp();
    let expiry = jiff::Timestamp::from_second(not_after).ok();
    let days = (not_after - jiff::Timestamp::now().as_second()) / 86400;
    let day = expiry.map_or(String::new(), |t| t.strftime("%Y-%m-%d").to_string());
    match days >= p.warn_days as i64 {
        true => Ok((format!("certificate valid for {days} more days (until {day})"), expiry)),
        false => Err((
            format!("certificate expires in {days} days ({day}), within {} days", p.warn_days),
            expiry,
        )),
    }
}

/// A TLS client config trusting `ca_pem` only, or the system's roots (loaded once, shared).
pub fn tls_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    static SYSTEM: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    if ca_pem.is_none()
        && let Some(c) = SYSTEM.get()
    {
        return Ok(c.clone());
    }
    let config = build_tls_config(ca_pem)?;
    Ok(match ca_pem {
        None => SYSTEM.get_or_init(|| config).clone(),
        Some(_) => config,
    })
}

fn build_tls_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pem) {
                let cert: rustls::pki_types::CertificateDer = cert.map_err(|e| format!("CA: {e}"))?;
                roots.add(cert).map_err(|e| format!("CA: {e}"))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
