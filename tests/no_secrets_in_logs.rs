//! No secret reaches a log line, even at `trace` for every crate, during a
//! whole apply (including errors from a wrong token).

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use homelab_operator::{
    cli::oneshot::{Engine, Files},
    config::{Config, SecretSource},
    metrics::Metrics,
    sim::pve::{PveSim, PveSimConfig, endpoint_for},
};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn trace_logs_never_contain_the_token() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let sim = PveSim::with_defaults(PveSimConfig {
        task_duration: Duration::from_millis(20),
        ..Default::default()
    })
    .unwrap();
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ep = endpoint_for("default", &sim, &server, dir.path()).unwrap();
    let (_, secret) = sim.token();
    let config = Config {
        path: "t".into(),
        proxmox: [("default".to_string(), ep.clone())].into(),
        ..Default::default()
    };
    let engine = Engine::new(&config, Arc::new(Metrics::default())).unwrap();
    let guests = homelab_operator::cli::resources::load(&[std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples")])
        .unwrap()
        .guests;
    let results = engine
        .apply_all(&guests, &Files::default(), 2, Duration::from_secs(30), &|l| tracing::info!("{l}"))
        .await;
    assert!(results.iter().all(|r| r.error.is_none()));

    // A wrong token: the error path must not echo what was sent either.
    if let SecretSource::File(p) = &ep.token_secret {
        std::fs::write(p, "wrong-secret-value").unwrap();
    }
    let r = engine
        .apply(&guests[0], &Files::default(), Duration::from_secs(5), &|l| tracing::info!("{l}"))
        .await;
    tracing::warn!(error = ?r.error, "expected failure");
    tracing::debug!(?config, "config as Debug");

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.lines().count() > 50,
        "trace logging was captured ({} lines)",
        logs.lines().count()
    );
    assert!(!logs.contains(&secret), "the token secret appeared in the logs");
    assert!(!logs.contains("wrong-secret-value"), "a rejected secret appeared in the logs");
    assert!(!logs.contains("PVEAPIToken="), "the Authorization header appeared in the logs");
}

#[tokio::test]
async fn trace_logs_never_contain_a_notification_secret() {
    use homelab_operator::{
        notify::{Event, Message, Notifier},
        sim::notify::{NotifySim, config_section},
    };
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let sim = NotifySim::new(Default::default());
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse("c.yaml", &config_section(&sim, &server, dir.path()).unwrap()).unwrap();
    let n = Notifier::new(config.notifications, None).unwrap();
    sim.rate_limit("discord", 1, 0.1);
    let msg = Message::new(Event::Failure, "MonitorTarget homelab/web01", "Down");
    for ch in ["telegram", "discord", "slack", "ntfy", "webhook"] {
        assert_eq!(n.send(ch, &msg).await.unwrap().error, None, "{ch}");
    }
    drop(server);
    assert!(n.send("telegram", &msg).await.unwrap().error.is_some());
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("notification sent"), "the capture works");
    let c = sim.config();
    for secret in [
        c.telegram_token.as_str(),
        "SIM-discord-webhook-token",
        "SIMslackwebhooksecret",
        "sim-hmac-key",
    ] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
}
