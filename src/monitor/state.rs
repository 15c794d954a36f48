//! A monitor's state machine: consecutive results flip Up/Down at the
//! thresholds; Down is notified once, reminded after the cooldown and its
//! recovery told once; maintenance records checks but notifies nothing, and
//! after it ends a still-failing target needs the failure threshold again
//! before anyone is told. Everything that must survive a restart lives in
//! the monitor's status. Pure.

use std::{collections::VecDeque, time::Duration};

use jiff::Timestamp;

use crate::api::MonitorState;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub failure_threshold: u32,
    pub success_threshold: u32,
    /// Between reminders while Down; `None`: no reminders.
    pub cooldown: Option<Duration>,
    pub notify_recovery: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notify {
    Failure,
    Reminder,
    Recovery { downtime: Duration },
}

/// Hourly buckets of (checks, successes) for the uptime figures; 7 days kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uptime {
    buckets: VecDeque<(i64, u32, u32)>,
}

impl Uptime {
    pub fn record(&mut self, now: Timestamp, ok: bool) {
        let hour = now.as_second().div_euclid(3600);
        match self.buckets.back_mut() {
            Some(b) if b.0 == hour => {
                b.1 += 1;
                b.2 += ok as u32;
            }
            _ => self.buckets.push_back((hour, 1, ok as u32)),
        }
        while self.buckets.front().is_some_and(|b| b.0 <= hour - 168) {
            self.buckets.pop_front();
        }
    }

    /// `99.93%` over the last `hours`, unset without checks.
    pub fn percent(&self, now: Timestamp, hours: i64) -> Option<String> {
        let from = now.as_second().div_euclid(3600) - hours;
        let (n, ok) = self
            .buckets
            .iter()
            .filter(|b| b.0 > from)
            .fold((0u64, 0u64), |a, b| (a.0 + b.1 as u64, a.1 + b.2 as u64));
        (n > 0).then(|| format!("{:.2}%", ok as f64 * 100.0 / n as f64))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracker {
    /// Up, Down or Unknown (Maintenance is shown over it, never stored here).
    pub state: MonitorState,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// Failures since the last success that were outside maintenance.
    pub failures_outside_maintenance: u32,
    pub last_transition: Option<Timestamp>,
    /// When Down was notified; unset when Up (or not notified).
    pub down_notified: Option<Timestamp>,
    /// The last Down notification or reminder.
    pub last_notified: Option<Timestamp>,
    pub uptime: Uptime,
}

/// What one check changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// The state flipped (or maintenance began/ended): worth a status write.
    pub changed: bool,
    pub notify: Option<Notify>,
}

impl Tracker {
    pub fn shown_state(&self, in_maintenance: bool) -> MonitorState {
        if in_maintenance { MonitorState::Maintenance } else { self.state }
    }

    pub fn observe(&mut self, ok: bool, now: Timestamp, in_maintenance: bool, s: &Settings) -> Step {
        self.uptime.record(now, ok);
        let mut step = Step::default();
        if ok {
            self.consecutive_successes += 1;
            self.consecutive_failures = 0;
            self.failures_outside_maintenance = 0;
            if self.state != MonitorState::Up && self.consecutive_successes >= s.success_threshold {
                let was_down = self.state == MonitorState::Down;
                let since = self.last_transition;
                self.flip(MonitorState::Up, now, &mut step);
                if was_down && self.down_notified.take().is_some() && s.notify_recovery {
                    let downtime = since.map_or(Duration::ZERO, |t| now.duration_since(t).unsigned_abs());
                    step.notify = Some(Notify::Recovery { downtime });
                }
                self.last_notified = None;
            }
            return step;
        }
        self.consecutive_failures += 1;
        self.consecutive_successes = 0;
        if in_maintenance {
            self.failures_outside_maintenance = 0;
        } else {
            self.failures_outside_maintenance += 1;
        }
        if self.state != MonitorState::Down && self.consecutive_failures >= s.failure_threshold {
            self.flip(MonitorState::Down, now, &mut step);
        }
        if self.state != MonitorState::Down || in_maintenance {
            return step;
        }
        match self.down_notified {
            None if self.failures_outside_maintenance >= s.failure_threshold => {
                self.down_notified = Some(now);
                self.last_notified = Some(now);
                step.notify = Some(Notify::Failure);
            }
            Some(_)
                if s.cooldown
                    .is_some_and(|c| self.last_notified.is_none_or(|l| now.duration_since(l).unsigned_abs() >= c)) =>
            {
                self.last_notified = Some(now);
                step.notify = Some(Notify::Reminder);
            }
            _ => {}
        }
        step
    }

    fn flip(&mut self, to: MonitorState, now: Timestamp, step: &mut Step) {
        self.state = to;
        self.last_transition = Some(now);
        step.changed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            failure_threshold: 3,
            success_threshold: 2,
            cooldown: Some(Duration::from_secs(600)),
            notify_recovery: true,
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    /// Feed results 30 s apart from `start`; the notifications, in order, with their check index.
    fn run(t: &mut Tracker, results: &[bool], start: i64, maintenance: impl Fn(usize) -> bool) -> Vec<(usize, Notify)> {
        let s = settings();
        results
            .iter()
            .enumerate()
            .filter_map(|(i, ok)| t.observe(*ok, at(start + 30 * i as i64), maintenance(i), &s).notify.map(|n| (i, n)))
            .collect()
    }

    #[test]
    fn down_after_the_threshold_once_reminded_after_the_cooldown_recovered_once() {
        let mut t = Tracker::default();
        let mut results = vec![true, true, false, false];
        assert!(run(&mut t, &results, 0, |_| false).is_empty(), "two failures are not yet Down");
        assert_eq!(t.state, MonitorState::Up);
        results = vec![false; 22];
        let n = run(&mut t, &results, 120, |_| false);
        assert_eq!(n[0], (0, Notify::Failure), "third failure in a row");
        assert_eq!(n[1], (20, Notify::Reminder), "600 s later");
        assert_eq!(n.len(), 2);
        let n = run(&mut t, &[true, true], 900, |_| false);
        assert_eq!(
            n,
            vec![(
                1,
                Notify::Recovery {
                    downtime: Duration::from_secs(810)
                }
            )],
            "second success; Down since t=120"
        );
        assert_eq!((t.state, t.down_notified), (MonitorState::Up, None));
    }

    #[test]
    fn one_flap_does_not_flip_and_thresholds_of_one_flip_at_once() {
        let mut t = Tracker::default();
        run(&mut t, &[true, true, false, true, false, false, true], 0, |_| false);
        assert_eq!(t.state, MonitorState::Up);
        let s = Settings {
            failure_threshold: 1,
            success_threshold: 1,
            ..settings()
        };
        assert_eq!(t.observe(false, at(500), false, &s).notify, Some(Notify::Failure));
        assert_eq!(
            t.observe(true, at(530), false, &s).notify,
            Some(Notify::Recovery {
                downtime: Duration::from_secs(30)
            })
        );
    }

    #[test]
    fn maintenance_records_but_tells_nobody_and_the_threshold_counts_again_after() {
        let mut t = Tracker::default();
        run(&mut t, &[true, true], 0, |_| false);
        // A reboot: down for 5 checks, all inside the window, back up inside it.
        let n = run(&mut t, &[false, false, false, false, false, true, true], 60, |_| true);
        assert!(n.is_empty(), "{n:?}");
        assert_eq!(t.state, MonitorState::Up, "recorded nonetheless");
        assert_eq!(t.shown_state(true), MonitorState::Maintenance);
        // Still down when the window ends: alerts after 3 more failures, not at once.
        let n = run(&mut t, &[false, false, false, false, false], 300, |i| i < 2);
        assert_eq!(n, vec![(4, Notify::Failure)], "2 in the window, then 3 outside");
        let n = run(&mut t, &[true, true], 500, |_| false);
        assert!(matches!(n[0].1, Notify::Recovery { .. }));
    }

    #[test]
    fn a_restart_resumes_from_status_without_alerting_again() {
        let mut t = Tracker::default();
        run(&mut t, &[false, false, false], 0, |_| false);
        assert!(t.down_notified.is_some());
        // What status keeps: state, counters, when Down was notified and the last reminder.
        let mut restarted = Tracker {
            state: t.state,
            consecutive_failures: t.consecutive_failures,
            failures_outside_maintenance: t.failures_outside_maintenance,
            last_transition: t.last_transition,
            down_notified: t.down_notified,
            last_notified: t.last_notified,
            ..Default::default()
        };
        let n = run(&mut restarted, &[false, false, false], 120, |_| false);
        assert!(n.is_empty(), "no second Down message: {n:?}");
        let quiet = Tracker {
            down_notified: None,
            ..restarted.clone()
        };
        let mut r2 = quiet;
        assert_eq!(
            run(&mut r2, &[false], 300, |_| false),
            vec![(0, Notify::Failure)],
            "without the status it would alert"
        );
    }

    #[test]
    fn uptime_is_the_share_of_good_checks() {
        let mut u = Uptime::default();
        for i in 0..100 {
            u.record(at(i * 60), i % 10 != 0);
        }
        assert_eq!(u.percent(at(6000), 24).as_deref(), Some("90.00%"));
        assert_eq!(u.percent(at(6000 + 8 * 86400), 168), None, "older than a week");
    }
}
