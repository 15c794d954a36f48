//! A loopback HTTP or HTTPS (self-signed) server around a simulator handler.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub type SimResponse = Response<Full<Bytes>>;

/// A request with its body read.
pub struct SimRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// `None` closes the connection without an answer (a dropped connection).
pub trait SimHandler: Send + Sync + 'static {
    fn handle(&self, req: SimRequest) -> BoxFuture<'_, Option<SimResponse>>;
}

pub struct SimServer {
    pub addr: SocketAddr,
    /// `https://127.0.0.1:PORT` or `http://…`.
    pub url: String,
    /// SHA-256 fingerprint of the self-signed certificate (HTTPS only).
    pub fingerprint: Option<String>,
    /// PEM of the self-signed certificate (HTTPS only), for CA-file tests.
    pub cert_pem: Option<String>,
    /// Writes the simulator refused (`POST /path: 500`): what a test of bad
    /// inputs asserts never happens (the operator checks first).
    refused: Arc<std::sync::Mutex<Vec<String>>>,
    stop: CancellationToken,
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl SimServer {
    pub async fn start<H: SimHandler>(handler: Arc<H>, tls: bool) -> std::io::Result<SimServer> {
        Self::start_on("127.0.0.1:0", handler, tls).await
    }

    pub async fn start_on<H: SimHandler>(bind: &str, handler: Arc<H>, tls: bool) -> std::io::Result<SimServer> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let (acceptor, fingerprint, cert_pem) = if tls {
            let (a, fp, pem) = tls_acceptor().map_err(std::io::Error::other)?;
            (Some(a), Some(fp), Some(pem))
        } else {
            (None, None, None)
        };
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{}", addr.port());
        let token = stop.clone();
        let refused: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let refusals = refused.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                };
                let handler = handler.clone();
                let acceptor = acceptor.clone();
                let token = token.clone();
                let refusals = refusals.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let refusals = refusals.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let req = SimRequest {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                query: parts.uri.query().unwrap_or("").to_string(),
                                headers: parts.headers,
                                body,
                            };
                            let write = format!("{} {}", req.method, req.path);
                            let answer = handler.handle(req).await;
                            if let Some(a) = answer.as_ref().filter(|a| a.status().as_u16() >= 400 && !write.starts_with("GET ")) {
                                refusals.lock().expect("refusals").push(format!("{write}: {}", a.status()));
                            }
                            answer.ok_or_else(|| std::io::Error::other("connection dropped by fault injection"))
                        }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let serve = async {
                        match acceptor {
                            Some(a) => {
                                if let Ok(s) = a.accept(stream).await {
                                    let _ = builder.serve_connection(TokioIo::new(s), service).await;
                                }
                            }
                            None => {
                                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    };
                    tokio::select! { _ = token.cancelled() => {}, _ = serve => {} }
                });
            }
        });
        Ok(SimServer {
            addr,
            url,
            fingerprint,
            cert_pem,
            refused,
            stop,
        })
    }

    /// The writes refused so far (`POST /api2/json/nodes/pve1/lxc: 500 Internal Server Error`).
    pub fn refused_writes(&self) -> Vec<String> {
        self.refused.lock().expect("refusals").clone()
    }
}

fn tls_acceptor() -> Result<(tokio_rustls::TlsAcceptor, String, String), String> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).map_err(|e| e.to_string())?;
    let der = cert.cert.der().clone();
    let fingerprint = crate::http::fingerprint_sha256(der.as_ref());
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .map_err(|e| e.to_string())?;
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), fingerprint, pem))
}

/// A JSON response with a reason phrase of our choosing (PVE puts its error text there).
pub fn json_response(status: u16, reason: Option<&str>, body: &serde_json::Value) -> SimResponse {
    let mut resp = Response::builder()
        .status(status)
        .header("content-type", "application/json;charset=UTF-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response");
    if let Some(r) = reason {
        // Reason phrases must be visible ASCII; PVE texts are.
        let clean: String = r.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()).collect();
        if let Ok(rp) = hyper::ext::ReasonPhrase::try_from(clean.into_bytes()) {
            resp.extensions_mut().insert(rp);
        }
    }
    resp
}
