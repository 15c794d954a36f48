//! Each check type against a local server the test runs (axum, a TCP echo,
//! TLS servers with made-up certificates) and DNS against the real PowerDNS,
//! failures included: timeout, refused, wrong status, body mismatch,
//! expired / soon-expiring / wrong-name certificate, NXDOMAIN.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Json, Router, http::StatusCode, routing::get};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use homelab_operator::monitor::checks::{DnsProbe, HttpProbe, Probe, TcpProbe, TlsProbe, tls_config};
use tokio::{io::AsyncWriteExt, net::TcpListener};

mod support {
    pub mod debian;
    pub mod dns_servers;
}

async fn serve_http() -> SocketAddr {
    let app = Router::new()
        .route(
            "/health",
            get(|| async { Json(serde_json::json!({"status": "ok", "db": {"up": true}})) }),
        )
        .route("/broken", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "maintenance") }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route("/redirect", get(|| async { axum::response::Redirect::temporary("/health") }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn http(addr: SocketAddr, path: &str) -> HttpProbe {
    HttpProbe {
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        url: format!("http://{addr}{path}"),
        method: reqwest::Method::GET,
        headers: vec![],
        expected_status: vec![],
        body_contains: None,
        body_regex: None,
        json: None,
        max_response: None,
    }
}

const T: Duration = Duration::from_secs(2);

#[tokio::test]
async fn http_checks_status_body_json_and_time() {
    let addr = serve_http().await;
    let r = Probe::Http(http(addr, "/health")).run(T).await;
    assert!(r.ok && r.message == "HTTP 200", "{r:?}");
    let r = Probe::Http(HttpProbe {
        json: Some(("/db/up".into(), "true".into())),
        body_contains: Some("ok".into()),
        ..http(addr, "/redirect")
    })
    .run(T)
    .await;
    assert!(r.ok, "redirect followed, JSON pointer matched: {r:?}");
    let r = Probe::Http(HttpProbe {
        json: Some(("/status".into(), "degraded".into())),
        ..http(addr, "/health")
    })
    .run(T)
    .await;
    assert_eq!((r.ok, r.message.as_str()), (false, "HTTP 200, /status is \"ok\" not degraded"));
    let r = Probe::Http(http(addr, "/broken")).run(T).await;
    assert_eq!((r.ok, r.message.as_str()), (false, "HTTP 503"));
    let r = Probe::Http(HttpProbe {
        expected_status: vec![503],
        body_regex: Some(regex::Regex::new("^maint").unwrap()),
        ..http(addr, "/broken")
    })
    .run(T)
    .await;
    assert!(r.ok, "{r:?}");
    let r = Probe::Http(HttpProbe {
        body_contains: Some("healthy".into()),
        ..http(addr, "/health")
    })
    .run(T)
    .await;
    assert!(!r.ok && r.message.contains("body does not contain \"healthy\""), "{r:?}");
    let r = Probe::Http(http(addr, "/slow")).run(Duration::from_secs(1)).await;
    assert_eq!((r.ok, r.message.as_str()), (false, "timed out after 1s"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let r = Probe::Http(http(closed, "/")).run(T).await;
    assert!(!r.ok && r.message.to_lowercase().contains("refused"), "{r:?}");
}

#[tokio::test]
async fn tcp_connects_sends_and_expects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let _ = s.write_all(b"+OK redis ready\r\n").await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    let probe = |expect: Option<&str>| {
        Probe::Tcp(TcpProbe {
            host: "127.0.0.1".into(),
            port,
            send: Some("PING\r\n".into()),
            expect: expect.map(str::to_string),
        })
    };
    assert!(probe(None).run(T).await.ok);
    assert!(probe(Some("+OK")).run(T).await.ok);
    let r = probe(Some("+PONG")).run(Duration::from_secs(1)).await;
    assert!(!r.ok, "{r:?}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r = Probe::Tcp(TcpProbe {
        host: "127.0.0.1".into(),
        port: closed,
        send: None,
        expect: None,
    })
    .run(T)
    .await;
    assert!(
        !r.ok && r.message.starts_with(&format!("connecting to 127.0.0.1:{closed}")),
        "{r:?}"
    );
}

/// A TLS server on loopback whose self-signed certificate is for `names` and ends `days` from now.
async fn tls_server(names: &[&str], days: i64) -> (u16, String) {
    let mut params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now + time::Duration::days(days);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let pem = cert.pem();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let a = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut t) = a.accept(s).await {
                    let _ = t.shutdown().await;
                }
            });
        }
    });
    (port, pem)
}

fn tls(port: u16, pem: &str, warn_days: u32) -> Probe {
    Probe::Tls(TlsProbe {
        host: "127.0.0.1".into(),
        port,
        warn_days,
        config: tls_config(Some(pem.as_bytes())).unwrap(),
    })
}

#[tokio::test]
async fn tls_reports_expiry_and_refuses_bad_certificates() {
    let (port, pem) = tls_server(&["127.0.0.1"], 90).await;
    let r = tls(port, &pem, 14).run(T).await;
    assert!(
        r.ok && r.message.starts_with("certificate valid for") && r.message.contains("more days"),
        "{r:?}"
    );
    assert!(r.cert_expiry.is_some());
    let (port, pem) = tls_server(&["127.0.0.1"], 3).await;
    let r = tls(port, &pem, 14).run(T).await;
    assert!(
        !r.ok && r.message.starts_with("certificate expires in") && r.message.ends_with("within 14 days"),
        "{r:?}"
    );
    assert!(r.cert_expiry.is_some(), "the expiry is reported even when it fails");
    let (port, pem) = tls_server(&["127.0.0.1"], -1).await;
    let r = tls(port, &pem, 14).run(T).await;
    assert!(!r.ok && r.message.to_lowercase().contains("expired"), "{r:?}");
    let (port, pem) = tls_server(&["other.example"], 90).await;
    let r = tls(port, &pem, 14).run(T).await;
    assert!(!r.ok && r.message.contains("not valid for name"), "{r:?}");
    // Without the CA the self-signed certificate is not trusted.
    let (port, _) = tls_server(&["127.0.0.1"], 90).await;
    let r = Probe::Tls(TlsProbe {
        host: "127.0.0.1".into(),
        port,
        warn_days: 14,
        config: tls_config(None).unwrap(),
    })
    .run(T)
    .await;
    assert!(!r.ok && r.message.contains("UnknownIssuer"), "{r:?}");
}

#[tokio::test]
async fn dns_against_the_real_powerdns() {
    let pdns = support::dns_servers::powerdns();
    let server = format!("127.0.0.1:{}", pdns.server.dns_port);
    let probe = |name: &str, rt, expected: &[&str], rcode| {
        Probe::Dns(DnsProbe {
            server: server.clone(),
            name: name.into(),
            record_type: rt,
            expected: expected.iter().map(|s| s.to_string()).collect(),
            rcode,
        })
    };
    let r = probe("home.arpa.", RecordType::NS, &["ns1.home.arpa"], ResponseCode::NoError)
        .run(T)
        .await;
    assert!(r.ok, "{r:?}");
    let r = probe("home.arpa.", RecordType::NS, &["ns2.home.arpa"], ResponseCode::NoError)
        .run(T)
        .await;
    assert!(!r.ok && r.message.contains("expected ns2.home.arpa"), "{r:?}");
    let r = probe("gone.home.arpa.", RecordType::A, &[], ResponseCode::NoError).run(T).await;
    assert!(!r.ok && r.message == "gone.home.arpa. A: NXDOMAIN (expected NOERROR)", "{r:?}");
    let r = probe("gone.home.arpa.", RecordType::A, &[], ResponseCode::NXDomain).run(T).await;
    assert!(r.ok, "NXDOMAIN asked for: {r:?}");
}
