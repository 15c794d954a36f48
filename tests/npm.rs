//! The Nginx Proxy Manager client against the schema-validating simulator.

use std::{sync::Arc, time::Duration};

use homelab_operator::{
    config::SecretSource,
    providers::npm::{HostSpec, META_MARK, Npm},
    sim::{SimServer, npm::NpmSim},
};
use serde_json::json;

struct Fixture {
    sim: Arc<NpmSim>,
    server: SimServer,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let sim = NpmSim::new("admin@example.com", "changeme-secret").unwrap();
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "changeme-secret").unwrap();
    std::fs::write(dir.path().join("wrong"), "nope").unwrap();
    Fixture { sim, server, dir }
}

impl Fixture {
    fn client(&self, secret: &str) -> Npm {
        Npm::new(
            &url::Url::parse(&self.server.url).unwrap(),
            "admin@example.com",
            SecretSource::File(self.dir.path().join(secret)),
            Duration::from_secs(3),
            None,
        )
        .unwrap()
    }
}

fn spec(domain: &str, port: u16, mark: &str) -> HostSpec {
    HostSpec {
        domain_names: vec![domain.into()],
        forward_scheme: "http".into(),
        forward_host: "10.5.0.50".into(),
        forward_port: port,
        certificate_id: json!(0),
        ssl_forced: false,
        hsts_enabled: false,
        http2_support: true,
        block_exploits: true,
        caching_enabled: false,
        allow_websocket_upgrade: true,
        access_list_id: 0,
        advanced_config: String::new(),
        enabled: true,
        meta: json!({ META_MARK: mark }),
    }
}

#[tokio::test]
async fn proxy_hosts_round_trip_with_a_meta_mark() {
    let f = fixture().await;
    let npm = f.client("secret");
    let created = npm.create(&spec("media.home.arpa", 8096, "mark-1")).await.unwrap();
    assert_eq!(created.mark(), Some("mark-1"));
    assert_eq!(created.nginx(), (true, None));
    let listed = npm.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    let mut changed = spec("media.home.arpa", 8920, "mark-1");
    changed.certificate_id = json!("new");
    changed.ssl_forced = true;
    let updated = npm.update(created.id, &changed).await.unwrap();
    assert_eq!(updated.forward_port, 8920);
    assert!(
        updated.certificate_id.as_u64().is_some(),
        "a Let's Encrypt certificate was requested"
    );
    // The simulator's answers have the shape NPM documents.
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/npm-openapi.bundled.json")).unwrap(),
    )
    .unwrap();
    let schema = &doc["paths"]["/nginx/proxy-hosts/{hostID}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    let raw = &f.sim.hosts()[0];
    let validator = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(raw).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    // nginx refusing a config shows in meta.
    let mut broken = changed.clone();
    broken.advanced_config = "invalid_directive on;".into();
    let (online, err) = npm.update(created.id, &broken).await.unwrap().nginx();
    assert!(!online && err.unwrap().contains("unknown directive"));
    npm.delete(created.id).await.unwrap();
    assert!(npm.list().await.unwrap().is_empty());
    let e = npm.get(created.id).await.unwrap_err();
    assert!(e.to_string().contains(&format!("404: Not Found - {}", created.id)), "{e}");
}

#[tokio::test]
async fn bodies_are_checked_like_npm_checks_them() {
    let f = fixture().await;
    let npm = f.client("secret");
    let mut bad = spec("a.home.arpa", 80, "m");
    bad.forward_port = 0;
    let e = npm.create(&bad).await.unwrap_err();
    assert!(!e.is_transient() && e.to_string().contains("data/forward_port"), "{e}");
    npm.create(&spec("a.home.arpa", 80, "m")).await.unwrap();
    let e = npm.create(&spec("a.home.arpa", 81, "m")).await.unwrap_err();
    assert!(e.to_string().contains("a.home.arpa is already in use"), "{e}");
}

#[tokio::test]
async fn tokens_are_renewed_and_replaced() {
    let f = fixture().await;
    // Tokens that live less than the renewal margin are renewed on the next call.
    *f.sim.token_lifetime.lock().unwrap() = Duration::from_secs(1800);
    let npm = f.client("secret");
    npm.list().await.unwrap();
    npm.list().await.unwrap();
    assert_eq!(f.sim.calls().get("POST /tokens"), Some(&1));
    assert!(f.sim.calls().get("GET /tokens").is_some_and(|n| *n >= 1), "{:?}", f.sim.calls());
    // An expired token: the server says so (400), the client logs in again and the call goes through.
    *f.sim.token_lifetime.lock().unwrap() = Duration::from_secs(86400);
    let npm = f.client("secret");
    npm.list().await.unwrap();
    f.sim.expire_tokens();
    npm.list().await.unwrap();
    assert_eq!(f.sim.calls().get("POST /tokens"), Some(&3));
    // Wrong password: a permission error that does not echo the secret.
    let e = f.client("wrong").list().await.unwrap_err();
    assert!(
        e.is_permission() && e.to_string().contains("Invalid email or password") && !e.to_string().contains("nope"),
        "{e}"
    );
}

#[tokio::test]
async fn token_quirks_of_the_real_server() {
    let f = fixture().await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/nginx/proxy-hosts", f.server.url);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"error": {"code": 403, "message": "Permission Denied"}})
    );
    assert_eq!(http.get(&url).bearer_auth("garbage").send().await.unwrap().status(), 500);
    assert_eq!(
        http.get(format!("{}/api/", f.server.url))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()["status"],
        "OK"
    );
}

#[tokio::test]
async fn injected_faults_are_transient_and_creates_are_not_repeated() {
    use homelab_operator::sim::{FaultKind, ScriptedFault};
    let f = fixture().await;
    let npm = f.client("secret");
    npm.list().await.unwrap();
    f.sim.faults.lock().unwrap().scripted.push_back(ScriptedFault::new(
        "GET",
        "/nginx/proxy-hosts",
        FaultKind::Status(502, "Bad Gateway".into()),
        1,
    ));
    let e = npm.list().await.unwrap_err();
    assert!(e.is_transient() && e.to_string().contains("502"), "{e}");
    f.sim
        .faults
        .lock()
        .unwrap()
        .scripted
        .push_back(ScriptedFault::new("POST", "/nginx/proxy-hosts", FaultKind::Drop, 1));
    let e = npm.create(&spec("x.home.arpa", 80, "m")).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(f.sim.hosts().is_empty(), "a dropped create is not retried blindly");
    assert_eq!(
        f.sim.calls().get("POST /nginx/proxy-hosts"),
        None,
        "the dropped request never reached the handler"
    );
}
