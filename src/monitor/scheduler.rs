//! One scheduler for every monitor: checks spread over their interval (a
//! stable offset per monitor, no thundering herd at startup), at most
//! `concurrency` at once, each bounded by its timeout, none on a reconcile
//! worker. Status is written when something a person would look at changed
//! (state, maintenance, a notification) and otherwise at most once per
//! summary period, never once per check.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::Semaphore, time::Instant};

use super::{
    checks::{CheckResult, Probe},
    state::{Notify, Settings, Step, Tracker},
};
use crate::{
    api::{self, ConditionState, MonitorNotification, MonitorState, MonitorTargetStatus},
    metrics::Metrics,
    notify::{Event, Message, Notifier},
    status::StatusSink,
};

/// `namespace/name`.
pub type Key = (String, String);

/// What the reconcile resolved from a MonitorTarget.
pub struct MonitorConfig {
    pub probe: Arc<Probe>,
    pub check_type: &'static str,
    pub target: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub settings: Settings,
    pub channels: Vec<String>,
    pub maintenance: Vec<(croner::Cron, Duration)>,
    pub paused: bool,
    /// The ProxmoxGuest (same namespace) the check targets: its operator tasks are maintenance.
    pub guest: Option<String>,
    pub generation: Option<i64>,
    /// Changes whenever the spec or the resolved target does (a new probe then starts fresh).
    pub fingerprint: u64,
}

/// Where one monitor's whole status goes (the controller: its status subresource).
pub type Sink = Arc<dyn StatusSink<MonitorTargetStatus>>;

struct Entry {
    config: MonitorConfig,
    tracker: Tracker,
    status: MonitorTargetStatus,
    next_due: Instant,
    running: bool,
    written: Option<(Instant, MonitorTargetStatus)>,
    sink: Sink,
}

/// How often a monitor's figures (latency, last check, uptime) are written
/// when its state has not changed: every write is an etcd revision and a
/// watch event for every watcher (ArgoCD included), and a figure that moved
/// by a millisecond is no news. State changes are written at once.
pub const FIGURES_EVERY: Duration = Duration::from_secs(3600);

pub struct Scheduler {
    entries: Mutex<HashMap<Key, Entry>>,
    /// Guests (`namespace`, `name`) with an operator task in flight that takes them down.
    busy_guests: Mutex<std::collections::HashSet<Key>>,
    notifier: Arc<Notifier>,
    limit: Arc<Semaphore>,
    metrics: Option<Arc<Metrics>>,
    /// How often latency and uptime alone are written.
    pub summary_every: Duration,
}

fn offset(key: &Key, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    Duration::from_millis(h.finish() % interval.as_millis().max(1) as u64)
}

/// Whether `now` falls in one of the windows (each a cron start plus a duration).
pub fn in_maintenance(windows: &[(croner::Cron, Duration)], now: jiff::Timestamp) -> bool {
    windows.iter().any(|(cron, len)| {
        let from = (now - jiff::SignedDuration::try_from(*len).unwrap_or_default()).to_zoned(jiff::tz::TimeZone::UTC);
        cron.find_next_occurrence(&from, true).is_ok_and(|start| start.timestamp() <= now)
    })
}

/// The tracker a restarted operator resumes from: what status kept.
pub fn tracker_from(status: &MonitorTargetStatus) -> Tracker {
    let ts = |s: &Option<String>| s.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let last = status.last_notification.as_ref().filter(|n| n.event != "recovery");
    Tracker {
        state: match status.state {
            MonitorState::Maintenance => MonitorState::Unknown,
            s => s,
        },
        consecutive_failures: status.consecutive_failures,
        consecutive_successes: status.consecutive_successes,
        failures_outside_maintenance: status.consecutive_failures,
        last_transition: ts(&status.last_transition),
        down_notified: ts(&status.down_notified),
        last_notified: last.and_then(|n| n.time.parse().ok()),
        ..Default::default()
    }
}

impl Scheduler {
    pub fn new(notifier: Arc<Notifier>, concurrency: usize, metrics: Option<Arc<Metrics>>) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            busy_guests: Mutex::new(Default::default()),
            notifier,
            limit: Arc::new(Semaphore::new(concurrency.max(1))),
            metrics,
            summary_every: FIGURES_EVERY,
        })
    }

    /// Start or update a monitor whose status goes to `sink`; a changed spec
    /// or target starts from what status says.
    pub async fn upsert(&self, key: Key, config: MonitorConfig, current: &MonitorTargetStatus, sink: Sink) {
        let status = {
            let mut entries = self.entries.lock().expect("monitors");
            let now = Instant::now();
            let keep = entries.get(&key).is_some_and(|e| e.config.fingerprint == config.fingerprint);
            if keep {
                let e = entries.get_mut(&key).expect("present");
                e.config.generation = config.generation;
                e.config.paused = config.paused;
                e.status.observed_generation = config.generation;
                e.sink = sink;
                return;
            }
            let mut status = current.clone();
            status.observed_generation = config.generation;
            status.check_type = Some(config.check_type.into());
            status.target = Some(config.target.clone());
            if config.paused {
                status.state = MonitorState::Unknown;
            }
            set_conditions(&mut status, &config);
            let entry = Entry {
                tracker: tracker_from(current),
                next_due: now + offset(&key, config.interval),
                config,
                status: status.clone(),
                running: false,
                written: None,
                sink,
            };
            entries.insert(key.clone(), entry);
            status
        };
        self.write(&key, status, true).await;
    }

    /// The guest reconciler says a task that takes the guest down (reboot, stop,
    /// rollback, …) started or ended: monitors targeting it are in maintenance meanwhile.
    pub fn guest_busy(&self, namespace: &str, guest: &str, busy: bool) {
        let key = (namespace.to_string(), guest.to_string());
        let mut set = self.busy_guests.lock().expect("busy guests");
        if busy {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    fn guest_in_task(&self, namespace: &str, guest: Option<&str>) -> bool {
        guest.is_some_and(|g| {
            self.busy_guests
                .lock()
                .expect("busy guests")
                .contains(&(namespace.to_string(), g.to_string()))
        })
    }

    pub fn remove(&self, key: &Key) {
        self.entries.lock().expect("monitors").remove(key);
        if let Some(m) = &self.metrics {
            m.monitor_gone(&key.0, &key.1);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("monitors").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Run until the process ends: start every due check, sleep until the next one.
    pub async fn run(self: Arc<Self>) {
        loop {
            let next = self.start_due();
            tokio::time::sleep_until(next.min(Instant::now() + Duration::from_secs(1))).await;
        }
    }

    /// Spawn the checks that are due; the earliest next due time.
    fn start_due(self: &Arc<Self>) -> Instant {
        let now = Instant::now();
        let mut next = now + Duration::from_secs(1);
        let mut entries = self.entries.lock().expect("monitors");
        for (key, e) in entries.iter_mut() {
            if e.config.paused {
                continue;
            }
            if e.next_due <= now && !e.running {
                e.running = true;
                // Fixed cadence from the first slot: a slow check does not drift the others.
                while e.next_due <= now {
                    e.next_due += e.config.interval;
                }
                let (me, key, probe, timeout, fp) = (
                    self.clone(),
                    key.clone(),
                    e.config.probe.clone(),
                    e.config.timeout,
                    e.config.fingerprint,
                );
                tokio::spawn(async move {
                    let result = {
                        let _permit = me.limit.clone().acquire_owned().await;
                        probe.run(timeout).await
                    };
                    me.finished(key, fp, result).await;
                });
            }
            next = next.min(e.next_due);
        }
        next
    }

    async fn finished(self: &Arc<Self>, key: Key, fingerprint: u64, r: CheckResult) {
        let now = jiff::Timestamp::now();
        let guest = self
            .entries
            .lock()
            .expect("monitors")
            .get(&key)
            .and_then(|e| e.config.guest.clone());
        let operator_task = self.guest_in_task(&key.0, guest.as_deref());
        let (status, urgent, notify) = {
            let mut entries = self.entries.lock().expect("monitors");
            let Some(e) = entries.get_mut(&key).filter(|e| e.config.fingerprint == fingerprint) else {
                return;
            };
            e.running = false;
            let maintenance = operator_task || in_maintenance(&e.config.maintenance, now);
            let was_shown = e.status.state;
            let step = e.tracker.observe(r.ok, now, maintenance, &e.config.settings);
            self.record_metrics(&key, &e.tracker, maintenance, &r);
            update_status(&mut e.status, &e.tracker, &r, now, maintenance);
            let notify = step.notify.clone().filter(|_| !e.config.channels.is_empty());
            if matches!(notify, Some(Notify::Failure)) {
                e.status.down_notified = Some(now.to_string());
            }
            if matches!(notify, Some(Notify::Recovery { .. })) || e.tracker.down_notified.is_none() {
                e.status.down_notified = None;
            }
            set_conditions(&mut e.status, &e.config);
            let urgent = step_matters(&step, was_shown, e.status.state) || notify.is_some();
            let notify = notify.map(|n| {
                (
                    n,
                    e.config.channels.clone(),
                    e.status.message.clone().unwrap_or_default(),
                    e.config.target.clone(),
                )
            });
            (e.status.clone(), urgent, notify)
        };
        self.write(&key, status, urgent).await;
        if let Some((n, channels, message, target)) = notify {
            self.send(key, n, channels, message, target).await;
        }
    }

    fn record_metrics(&self, key: &Key, t: &Tracker, maintenance: bool, r: &CheckResult) {
        if let Some(m) = &self.metrics {
            let up = match t.shown_state(maintenance) {
                MonitorState::Up => Some(1),
                MonitorState::Down => Some(0),
                _ => None,
            };
            m.monitor_checked(&key.0, &key.1, up, r.latency, r.cert_expiry.map(|t| t.as_second()));
        }
    }

    async fn send(&self, key: Key, n: Notify, channels: Vec<String>, message: String, target: String) {
        let subject = format!("MonitorTarget {}/{}", key.0, key.1);
        let msg = match &n {
            Notify::Failure => Message::new(Event::Failure, subject, format!("Down: {message}")).with_detail(format!("target: {target}")),
            Notify::Reminder => {
                Message::new(Event::Reminder, subject, format!("still Down: {message}")).with_detail(format!("target: {target}"))
            }
            Notify::Recovery { downtime } => Message::new(
                Event::Recovery,
                subject,
                format!("Up again after {}", crate::human::duration(downtime.as_secs() as i64)),
            )
            .with_detail(format!("target: {target}")),
        };
        let outcomes = self.notifier.send_all(&channels, &msg).await;
        let status = {
            let mut entries = self.entries.lock().expect("monitors");
            let Some(e) = entries.get_mut(&key) else { return };
            e.status.last_notification = Some(MonitorNotification {
                event: msg.event.as_str().into(),
                time: jiff::Timestamp::now().to_string(),
                channels: crate::notify::status_rows(outcomes),
            });
            e.status.clone()
        };
        self.write(&key, status, true).await;
    }

    /// Write if `urgent`, or if the summary period passed and something changed.
    async fn write(&self, key: &Key, status: MonitorTargetStatus, urgent: bool) {
        let sink = {
            let entries = self.entries.lock().expect("monitors");
            let Some(e) = entries.get(key) else { return };
            let due = match &e.written {
                Some((_, last)) if *last == status => false,
                Some((at, _)) => urgent || at.elapsed() >= self.summary_every,
                None => true,
            };
            if !due {
                return;
            }
            e.sink.clone()
        };
        match sink.save(&status).await {
            Ok(()) => {
                if let Some(e) = self.entries.lock().expect("monitors").get_mut(key) {
                    e.written = Some((Instant::now(), status));
                }
            }
            Err(err) => tracing::warn!(namespace = %key.0, name = %key.1, error = %err, "writing monitor status"),
        }
    }
}

/// A state change a person would look at (Maintenance shown or gone counts).
fn step_matters(step: &Step, before: MonitorState, after: MonitorState) -> bool {
    step.changed || before != after
}

fn update_status(s: &mut MonitorTargetStatus, t: &Tracker, r: &CheckResult, now: jiff::Timestamp, maintenance: bool) {
    s.state = t.shown_state(maintenance);
    s.last_check = Some(now.to_string());
    s.latency = Some(format!("{}ms", r.latency.as_millis()));
    s.message = Some(r.message.clone());
    s.consecutive_failures = t.consecutive_failures;
    s.consecutive_successes = t.consecutive_successes;
    s.last_transition = t.last_transition.map(|t| t.to_string());
    s.uptime24h = t.uptime.percent(now, 24).or(s.uptime24h.take());
    s.uptime7d = t.uptime.percent(now, 168).or(s.uptime7d.take());
    if let Some(e) = r.cert_expiry {
        s.certificate_expiry = Some(e.to_string());
    }
}

/// Ready: configured and checking. Healthy: the target is Up (its own condition, so a Down
/// target shows in ArgoCD without the monitor object flapping).
fn set_conditions(s: &mut MonitorTargetStatus, c: &MonitorConfig) {
    let (ready, reason, msg) = match c.paused {
        true => (true, "Paused", "paused: no checks run".to_string()),
        false => (
            true,
            "Checking",
            format!("{} check of {} every {}s", c.check_type, c.target, c.interval.as_secs()),
        ),
    };
    let healthy = match s.state {
        _ if c.paused => (false, "Paused", "paused: no checks run".into()),
        MonitorState::Up => (true, "Up", s.message.clone().unwrap_or_default()),
        MonitorState::Down => (false, "Down", s.message.clone().unwrap_or_default()),
        MonitorState::Maintenance => (true, "Maintenance", "in a maintenance window".into()),
        MonitorState::Unknown => (false, "Unknown", "no result yet".into()),
    };
    let wanted = [
        ConditionState::new(api::CONDITION_READY, ready, reason, msg),
        ConditionState::new(api::CONDITION_HEALTHY, healthy.0, healthy.1, healthy.2),
        ConditionState::new(api::CONDITION_STALLED, false, "AsExpected", ""),
    ];
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    s.conditions = api::merge_conditions(&s.conditions, &wanted, c.generation, now);
}
