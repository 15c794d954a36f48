//! Every notification channel against its simulator (Telegram, Discord,
//! Slack, ntfy, signed webhook) and email against a real SMTP server
//! (Debian's python3-aiosmtpd with STARTTLS and AUTH): messages arrive as
//! sent, rate limits are waited out, refusals are reported with the service's
//! words and never with a secret.

mod support {
    pub mod debian;
    pub mod smtp;
}

use std::{process::Command, sync::Arc};

use homelab_operator::{
    config::Config,
    metrics::Metrics,
    notify::{Event, Message, Notifier, channels::sign},
    sim::{
        SimServer,
        notify::{NotifySim, NotifySimConfig, config_section},
    },
};

struct World {
    sim: Arc<NotifySim>,
    notifier: Notifier,
    metrics: Arc<Metrics>,
    config: Config,
    _server: SimServer,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let sim = NotifySim::new(NotifySimConfig::default());
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse("c.yaml", &config_section(&sim, &server, dir.path()).unwrap()).unwrap();
    let metrics = Arc::new(Metrics::default());
    let notifier = Notifier::new(config.notifications.clone(), Some(metrics.clone())).unwrap();
    World {
        sim,
        notifier,
        metrics,
        config,
        _server: server,
        _dir: dir,
    }
}

fn down() -> Message {
    Message::new(Event::Failure, "MonitorTarget homelab/web01", "Down: connection refused").with_detail("3 checks failed since 02:14")
}

#[tokio::test]
async fn every_http_channel_delivers_the_message() {
    let w = world().await;
    for ch in ["telegram", "discord", "slack", "ntfy", "webhook"] {
        let out = w.notifier.send(ch, &down()).await.unwrap();
        assert_eq!((out.error.as_deref(), out.attempts), (None, 1), "{ch}");
    }
    let got = w.sim.received();
    let by = |s: &str| got.iter().find(|r| r.service == s).unwrap().clone();
    for s in ["telegram", "discord", "slack"] {
        assert!(
            by(s)
                .text
                .starts_with("[FAILURE] MonitorTarget homelab/web01\nDown: connection refused"),
            "{s}: {:?}",
            by(s)
        );
    }
    let ntfy = by("ntfy");
    assert_eq!(ntfy.headers["title"], "[FAILURE] MonitorTarget homelab/web01");
    assert_eq!(
        (ntfy.headers["priority"].as_str(), ntfy.headers["tags"].as_str()),
        ("4", "rotating_light")
    );
    let hook = by("webhook");
    assert_eq!(
        hook.headers["x-homelab-signature"],
        sign(b"sim-hmac-key", hook.body.as_bytes()),
        "signed over the body"
    );
    let body: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(
        (body["event"].as_str(), body["subject"].as_str()),
        (Some("failure"), Some("MonitorTarget homelab/web01"))
    );
    let text = w.metrics.render();
    assert!(
        text.contains(r#"homelab_operator_notifications_total{channel_type="discord",outcome="sent"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn rate_limits_are_waited_out_as_the_service_asks() {
    let w = world().await;
    w.sim.rate_limit("discord", 1, 0.2);
    w.sim.rate_limit("telegram", 1, 1.0);
    w.sim.rate_limit("slack", 1, 1.0);
    w.sim.rate_limit("ntfy", 1, 1.0);
    for ch in ["discord", "telegram", "slack", "ntfy"] {
        let out = w.notifier.send(ch, &down()).await.unwrap();
        assert_eq!((out.error.as_deref(), out.attempts), (None, 2), "{ch}: {out:?}");
    }
    assert_eq!(w.sim.received().len(), 4, "each delivered once");
}

#[tokio::test]
async fn refusals_are_reported_with_the_service_words_and_no_secret() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tok"), "999:wrong-token").unwrap();
    let yaml = format!(
        "notifications:\n  tg: {{type: telegram, apiUrl: \"{}\", chatId: \"42\", botTokenFile: {}}}\n  \
         tgwrong: {{type: telegram, apiUrl: \"{}\", chatId: \"-1001234567890\", botTokenFile: {}}}\n",
        w._server.url,
        w._dir.path().join("telegram-token").display(),
        w._server.url,
        dir.path().join("tok").display()
    );
    let bad = Notifier::new(Config::parse("c.yaml", &yaml).unwrap().notifications, None).unwrap();
    let out = bad.send("tg", &down()).await.unwrap();
    assert_eq!(
        (out.error.as_deref(), out.attempts),
        (Some("Telegram: Bad Request: chat not found"), 1)
    );
    let out = bad.send("tgwrong", &down()).await.unwrap();
    assert_eq!(out.error.as_deref(), Some("Telegram: Unauthorized"));
    // A server that is gone: retried, then reported without the URL (it holds the token).
    let gone = format!(
        "notifications:\n  dc: {{type: discord, webhookUrlFile: {}}}\n",
        w._dir.path().join("discord-url").display()
    );
    let cfg = Config::parse("c.yaml", &gone).unwrap();
    drop(w._server);
    let n = Notifier::new(cfg.notifications, None).unwrap();
    let out = n.send("dc", &down()).await.unwrap();
    let e = out.error.unwrap();
    assert_eq!(out.attempts, 4, "{e}");
    assert!(!e.contains("SIM-discord-webhook-token") && !e.contains("/api/webhooks"), "{e}");
    assert!(w.notifier.send("nope", &down()).await.is_err());
    let _ = &w.config;
}

#[tokio::test]
async fn email_goes_through_a_real_smtp_server_with_starttls_and_auth() {
    let s = support::smtp::smtp();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "smtp-s3cret\n").unwrap();
    std::fs::write(dir.path().join("wrong"), "nope").unwrap();
    let mail = |pw: &str| s.channel(pw, &dir.path().join(pw));
    let cfg = Config::parse("c.yaml", &format!("notifications:\n{}{}", mail("pw"), mail("wrong"))).unwrap();
    let n = Notifier::new(cfg.notifications, None).unwrap();
    let recovered = Message::new(Event::Recovery, "MonitorTarget homelab/web01", "Up again after 4m 10s");
    let out = n.send("pw", &recovered).await.unwrap();
    assert_eq!(out.error, None, "{out:?}");
    let got = s.mails();
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("X-Envelope-To: me@home.arpa,ops@home.arpa"), "{}", got[0]);
    assert!(got[0].contains("Subject: [RECOVERED] MonitorTarget homelab/web01"), "{}", got[0]);
    assert!(got[0].contains("Up again after 4m 10s"), "{}", got[0]);
    // A wrong password is refused by the server (535) and not retried; the password is not in the error.
    let out = n.send("wrong", &recovered).await.unwrap();
    let e = out.error.unwrap();
    assert_eq!(out.attempts, 1, "{e}");
    assert!(e.contains("535") || e.to_lowercase().contains("authentication"), "{e}");
    assert!(!e.contains("nope") && !e.contains("smtp-s3cret"), "{e}");
    assert_eq!(s.mails().len(), 1);
}

#[tokio::test]
async fn notify_test_sends_one_message_as_the_readme_says() {
    let w = world().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, config_section(&w.sim, &w._server, dir.path()).unwrap()).unwrap();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let cmd = readme
        .split('`')
        .find(|s| s.starts_with("homelab-operator notify-test --config "))
        .expect("README's notify-test command");
    let args: Vec<String> = cmd.split_whitespace().skip(1).map(str::to_string).collect();
    assert_eq!(args.len(), 4, "{cmd}");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_homelab-operator"))
            .args([&args[0], "--config"])
            .arg(&config)
            .arg(&args[3])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(": sent (1 attempt)"), "{stdout}");
    let got = w.sim.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].text.starts_with("[TEST] homelab-operator notify-test"), "{:?}", got[0]);
}
