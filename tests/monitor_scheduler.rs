//! The scheduler end to end against a local HTTP service and the simulated
//! Telegram: Up, Down after the threshold with one message, recovery with one
//! message, status written on changes only, a restart that does not alert again.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use futures::future::BoxFuture;
use homelab_operator::{
    api::{MonitorState, MonitorTargetSpec, MonitorTargetStatus},
    config::Config,
    monitor::{
        probe,
        scheduler::{Key, Scheduler},
    },
    notify::Notifier,
    sim::notify::{NotifySim, config_section},
    status::StatusSink,
};

#[derive(Default)]
struct Recorder(Mutex<Vec<MonitorTargetStatus>>);

impl StatusSink<MonitorTargetStatus> for Recorder {
    fn save<'a>(&'a self, status: &'a MonitorTargetStatus) -> BoxFuture<'a, Result<(), String>> {
        self.0.lock().unwrap().push(status.clone());
        Box::pin(async { Ok(()) })
    }
}

impl Recorder {
    fn last(&self) -> Option<MonitorTargetStatus> {
        self.0.lock().unwrap().last().cloned()
    }
    fn writes(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Wait (bounded only to end a hang) until the last written status satisfies `f`.
async fn until(r: &Recorder, what: &str, f: impl Fn(&MonitorTargetStatus) -> bool) -> MonitorTargetStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = r.last().filter(|s| f(s)) {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {what}: {:?}", r.last());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn service(up: Arc<AtomicBool>) -> String {
    let app = Router::new()
        .route(
            "/",
            get(|State(up): State<Arc<AtomicBool>>| async move {
                if up.load(Ordering::SeqCst) {
                    StatusCode::OK
                } else {
                    StatusCode::BAD_GATEWAY
                }
            }),
        )
        .with_state(up);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// The simulated chat services and a notifier for their channels (server and dir kept alive by the caller).
async fn chat() -> (Arc<NotifySim>, homelab_operator::sim::SimServer, tempfile::TempDir, Arc<Notifier>) {
    let chat = NotifySim::new(Default::default());
    let server = chat.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let channels = Config::parse("c.yaml", &config_section(&chat, &server, dir.path()).unwrap())
        .unwrap()
        .notifications;
    (chat, server, dir, Arc::new(Notifier::new(channels, None).unwrap()))
}

#[tokio::test]
async fn down_is_told_once_recovery_once_and_status_is_written_on_changes() {
    let up = Arc::new(AtomicBool::new(true));
    let url = service(up.clone()).await;
    let (chat, chat_server, dir, notifier) = chat().await;
    let recorder = Arc::new(Recorder::default());
    let mut sched = Scheduler::new(notifier, 4, None);
    Arc::get_mut(&mut sched).unwrap().summary_every = Duration::from_secs(3600);
    tokio::spawn(sched.clone().run());
    let spec: MonitorTargetSpec = serde_yaml_ng::from_str(&format!(
        "http: {{url: \"{url}\"}}\nfailureThreshold: 3\nnotify: {{channels: [telegram], cooldownMinutes: 0}}\n"
    ))
    .unwrap();
    let build = || {
        let mut c = probe::build(&spec, None, &Default::default(), Some(1)).unwrap();
        c.interval = Duration::from_millis(50);
        c
    };
    let key: Key = ("homelab".into(), "web".into());
    sched
        .upsert(key.clone(), build(), &MonitorTargetStatus::default(), recorder.clone())
        .await;
    let s = until(&recorder, "Up", |s| s.state == MonitorState::Up).await;
    assert_eq!(s.latency.as_deref().map(|l| l.ends_with("ms")), Some(true));
    up.store(false, Ordering::SeqCst);
    let s = until(&recorder, "Down and notified", |s| {
        s.state == MonitorState::Down && s.last_notification.is_some()
    })
    .await;
    assert_eq!((s.consecutive_failures >= 3, s.message.as_deref()), (true, Some("HTTP 502")));
    assert!(s.down_notified.is_some());
    let got = chat.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].text.starts_with("[FAILURE] MonitorTarget homelab/web\nDown: HTTP 502"),
        "{}",
        got[0].text
    );

    // A restarted operator resumes from that status: no second Down message.
    sched.remove(&key);
    let restarted = Arc::new(Recorder::default());
    // Changes only: the first scheduler wrote on upsert, Up, Down and the notification, while many checks ran.
    assert!(recorder.writes() <= 5, "{} writes", recorder.writes());
    let channels = Config::parse("c.yaml", &config_section(&chat, &chat_server, dir.path()).unwrap())
        .unwrap()
        .notifications;
    let mut sched2 = Scheduler::new(Arc::new(Notifier::new(channels, None).unwrap()), 4, None);
    // This one writes every check, so the test can watch the failures pile up.
    Arc::get_mut(&mut sched2).unwrap().summary_every = Duration::ZERO;
    tokio::spawn(sched2.clone().run());
    sched2.upsert(key.clone(), build(), &s, restarted.clone()).await;
    until(&restarted, "still Down after more checks", |s| {
        s.state == MonitorState::Down && s.consecutive_failures >= 6
    })
    .await;
    assert_eq!(chat.received().len(), 1, "no re-alert after the restart");

    up.store(true, Ordering::SeqCst);
    let s = until(&restarted, "recovered and told", |s| {
        s.state == MonitorState::Up && s.last_notification.as_ref().is_some_and(|n| n.event == "recovery")
    })
    .await;
    assert!(s.down_notified.is_none());
    let got = chat.received();
    assert_eq!(got.len(), 2);
    assert!(
        got[1].text.contains("[RECOVERED] MonitorTarget homelab/web\nUp again after"),
        "{}",
        got[1].text
    );
    assert!(s.consecutive_successes >= 1);
}

#[tokio::test]
async fn plan_and_apply_run_a_monitor_once() {
    let up = Arc::new(AtomicBool::new(true));
    let url = service(up.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), "proxmox: {}\n").unwrap();
    std::fs::write(
        dir.path().join("mon.yaml"),
        format!("apiVersion: homelab.dev/v1alpha1\nkind: MonitorTarget\nmetadata: {{name: local, namespace: lab}}\nspec:\n  http: {{url: \"{url}\"}}\n  intervalSeconds: 30\n"),
    )
    .unwrap();
    let run = |command: &'static str| {
        let dir = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_homelab-operator"))
                .args([command, "--config"])
                .arg(dir.join("config.yaml"))
                .arg("-f")
                .arg(dir.join("mon.yaml"))
                .output()
                .unwrap()
        })
    };
    let plan = run("plan").await.unwrap();
    let out = String::from_utf8_lossy(&plan.stdout);
    assert!(
        out.contains(&format!("MonitorTarget lab/local:\n  + http check of {url} every 30s")),
        "{out}"
    );
    let applied = run("apply").await.unwrap();
    let out = String::from_utf8_lossy(&applied.stdout);
    assert_eq!(applied.status.code(), Some(0), "{out}");
    let row = out.lines().find(|l| l.starts_with("lab/local")).unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("http") && row.contains(" Up ") && row.contains("HTTP 200"), "{row}");
    up.store(false, Ordering::SeqCst);
    let applied = run("apply").await.unwrap();
    let out = String::from_utf8_lossy(&applied.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("lab/local") && l.contains(" Down ") && l.contains("HTTP 502")),
        "{out}"
    );
}

#[tokio::test]
async fn a_guest_the_operator_takes_down_is_maintenance_and_tells_nobody() {
    let up = Arc::new(AtomicBool::new(true));
    let url = service(up.clone()).await;
    let (chat, _chat_server, _dir, notifier) = chat().await;
    let recorder = Arc::new(Recorder::default());
    let mut sched = Scheduler::new(notifier, 4, None);
    Arc::get_mut(&mut sched).unwrap().summary_every = Duration::ZERO;
    tokio::spawn(sched.clone().run());
    let spec: MonitorTargetSpec = serde_yaml_ng::from_str(&format!(
        "target: {{kind: ProxmoxGuest, name: web01}}\nhttp: {{url: \"{url}\"}}\nfailureThreshold: 2\nnotify: {{channels: [telegram]}}\n"
    ))
    .unwrap();
    let mut config = probe::build(&spec, Some("127.0.0.1"), &Default::default(), Some(1)).unwrap();
    config.interval = Duration::from_millis(50);
    sched
        .upsert(
            ("homelab".into(), "web".into()),
            config,
            &MonitorTargetStatus::default(),
            recorder.clone(),
        )
        .await;
    until(&recorder, "Up", |s| s.state == MonitorState::Up).await;
    // The operator reboots web01: the service is gone meanwhile, nobody is told.
    sched.guest_busy("homelab", "web01", true);
    up.store(false, Ordering::SeqCst);
    let s = until(&recorder, "in maintenance through the failures", |s| {
        s.state == MonitorState::Maintenance && s.consecutive_failures >= 5
    })
    .await;
    assert!(s.down_notified.is_none() && s.last_notification.is_none(), "{s:?}");
    assert!(chat.received().is_empty());
    // The task ended but the guest stays down: after the failure threshold the alert fires as usual.
    sched.guest_busy("homelab", "web01", false);
    let s = until(&recorder, "Down and told", |s| {
        s.state == MonitorState::Down && s.last_notification.is_some()
    })
    .await;
    assert_eq!(s.last_notification.unwrap().event, "failure");
    assert_eq!(chat.received().len(), 1);
}

#[tokio::test]
async fn a_paused_monitor_is_ready_and_says_paused_instead_of_unknown() {
    let (_chat, _server, _dir, notifier) = chat().await;
    let recorder = Arc::new(Recorder::default());
    let sched = Scheduler::new(notifier, 4, None);
    let spec: MonitorTargetSpec = serde_yaml_ng::from_str("tcp: {host: 127.0.0.1, port: 9}\npaused: true\n").unwrap();
    let config = probe::build(&spec, None, &Default::default(), Some(1)).unwrap();
    sched
        .upsert(
            ("homelab".into(), "nas".into()),
            config,
            &MonitorTargetStatus::default(),
            recorder.clone(),
        )
        .await;
    let s = recorder.last().expect("written at once");
    assert_eq!(s.state, MonitorState::Unknown);
    let reason = |t: &str| homelab_operator::api::find_condition(&s.conditions, t).map(|c| (c.status.clone(), c.reason.clone()));
    assert_eq!(reason("Ready"), Some(("True".into(), "Paused".into())));
    // ArgoCD's health check shows Paused as what was asked for, not as a monitor stuck waiting.
    assert_eq!(reason("Healthy"), Some(("False".into(), "Paused".into())));
}
