//! Prometheus metrics (prefix `homelab_operator_`), bounded labels only:
//! kind, error category, system, operation, outcome; the per-guest backup
//! series carry namespace, policy and guest, bounded by the number of guests
//! (a member that leaves its policy loses its series).

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub system: &'static str,
    pub op: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SystemLabels {
    pub system: &'static str,
}

/// One member of one policy (BackupPolicy or UpdatePolicy).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    pub namespace: String,
    pub policy: String,
    /// The ProxmoxGuest's name, or `vmid-<N>` for a member named by VMID.
    pub guest: String,
}

/// An UpdatePolicy's last run, one result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunResultLabels {
    pub namespace: String,
    pub policy: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MonitorLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyLabels {
    pub channel_type: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

/// What the backup series say about one member.
pub struct MemberBackup {
    pub guest: String,
    /// Seconds since the epoch of the newest backup, if any.
    pub last_success: Option<i64>,
    pub fresh: bool,
}

/// A policy's member series: kind (`backup`, `update`), namespace, policy.
type SeriesKey = (&'static str, String, String);

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<KindLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub outside_calls: Family<CallLabels, Counter>,
    pub tasks_in_flight: Family<SystemLabels, Gauge>,
    pub backup_last_success: Family<MemberLabels, Gauge>,
    pub backup_age: Family<MemberLabels, Gauge>,
    pub backup_fresh: Family<MemberLabels, Gauge>,
    /// Guests of a cluster in no enabled backup job (`/cluster/backup-info/not-backed-up`).
    pub guests_not_backed_up: Family<ClusterLabels, Gauge>,
    pub notifications: Family<NotifyLabels, Counter>,
    pub monitor_up: Family<MonitorLabels, Gauge>,
    pub updates_pending: Family<MemberLabels, Gauge>,
    pub update_run_members: Family<RunResultLabels, Gauge>,
    pub monitor_cert_expiry: Family<MonitorLabels, Gauge>,
    pub check_duration: Histogram,
    /// The guests each policy has series for (by kind, namespace, policy), to drop those that left.
    member_series: std::sync::Mutex<std::collections::HashMap<SeriesKey, Vec<String>>>,
}

/// A labelled family registered under `name`.
fn family<L, M>(r: &mut Registry, name: &str, help: &str) -> Family<L, M>
where
    Family<L, M>: prometheus_client::registry::Metric + Clone + Default,
{
    registered(r, name, help, Family::default())
}

/// Register `metric` under `name` and hand it back.
fn registered<M: prometheus_client::registry::Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let r = &mut Registry::with_prefix("homelab_operator");
        let duration = || Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        let check_buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let backup = "BackupPolicy member's newest backup";
        Self {
            reconciles: registered(r, "reconciles", "Reconciles run, by kind", Family::default()),
            reconcile_errors: registered(
                r,
                "reconcile_errors",
                "Failed reconciles, by kind and error category",
                Family::default(),
            ),
            reconcile_duration: registered(
                r,
                "reconcile_duration_seconds",
                "Reconcile duration, by kind",
                Family::new_with_constructor(duration),
            ),
            outside_calls: registered(
                r,
                "outside_calls",
                "Calls to outside systems, by system, operation and outcome",
                Family::default(),
            ),
            tasks_in_flight: registered(r, "tasks_in_flight", "Long-running outside tasks being polled", Family::default()),
            backup_last_success: registered(
                r,
                "backup_last_success_timestamp_seconds",
                &format!("Time of each {backup}"),
                Family::default(),
            ),
            backup_age: family(r, "backup_age_seconds", &format!("Age of each {backup}")),
            backup_fresh: registered(
                r,
                "backup_fresh",
                &format!("1 when a {backup} is younger than maxAge, else 0"),
                Family::default(),
            ),
            guests_not_backed_up: registered(
                r,
                "guests_not_backed_up",
                "Guests of a Proxmox cluster that no enabled backup job covers",
                Family::default(),
            ),
            notifications: registered(
                r,
                "notifications",
                "Notifications sent, by channel type and outcome (sent, failed)",
                Family::default(),
            ),
            monitor_up: registered(
                r,
                "monitor_up",
                "1 when a MonitorTarget is Up, 0 when Down (absent otherwise)",
                Family::default(),
            ),
            monitor_cert_expiry: registered(
                r,
                "monitor_certificate_expiry_timestamp_seconds",
                "End of validity of the certificate a MonitorTarget's check saw",
                Family::default(),
            ),
            check_duration: registered(
                r,
                "monitor_check_duration_seconds",
                "Duration of monitor checks",
                Histogram::new(check_buckets),
            ),
            updates_pending: family(r, "guest_updates_pending", "Updates pending on a member, as last checked"),
            update_run_members: family(r, "update_last_run_members", "Members of the last update run, by result"),
            registry: std::mem::take(r),
            member_series: Default::default(),
        }
    }
}

/// Peak resident memory of this process in MiB (`VmHWM`), for the benchmarks.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

impl Metrics {
    /// One check's series; `up` unset (Unknown, Maintenance) drops the gauge.
    pub fn monitor_checked(&self, namespace: &str, name: &str, up: Option<i64>, took: std::time::Duration, cert_expiry: Option<i64>) {
        let l = MonitorLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        match up {
            Some(v) => {
                self.monitor_up.get_or_create(&l).set(v);
            }
            None => {
                self.monitor_up.remove(&l);
            }
        }
        if let Some(t) = cert_expiry {
            self.monitor_cert_expiry.get_or_create(&l).set(t);
        }
        self.check_duration.observe(took.as_secs_f64());
    }

    pub fn monitor_gone(&self, namespace: &str, name: &str) {
        let l = MonitorLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.monitor_up.remove(&l);
        self.monitor_cert_expiry.remove(&l);
    }

    pub fn notification(&self, channel_type: &'static str, outcome: &'static str) {
        self.notifications.get_or_create(&NotifyLabels { channel_type, outcome }).inc();
    }

    pub fn outside_call(&self, system: &'static str, op: &'static str, outcome: &'static str) {
        self.outside_calls.get_or_create(&CallLabels { system, op, outcome }).inc();
    }

    /// Total outside calls to one system (benchmarks and tests read this).
    pub fn outside_call_total(&self, system: &str) -> u64 {
        let text = self.render();
        let prefix = format!("homelab_operator_outside_calls_total{{system=\"{system}\"");
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Note the guests a policy now has series for; drop the series of those that left.
    fn keep_members(
        &self,
        kind: &'static str,
        namespace: &str,
        policy: &str,
        guests: Vec<String>,
        families: &[&Family<MemberLabels, Gauge>],
    ) {
        let mut series = self.member_series.lock().expect("metrics lock");
        let key = (kind, namespace.to_string(), policy.to_string());
        for gone in series.remove(&key).unwrap_or_default().iter().filter(|g| !guests.contains(g)) {
            let l = MemberLabels {
                namespace: namespace.to_string(),
                policy: policy.to_string(),
                guest: gone.clone(),
            };
            for family in families {
                family.remove(&l);
            }
        }
        if !guests.is_empty() {
            series.insert(key, guests);
        }
    }

    /// Set a policy's per-member backup series (an empty list drops them all).
    pub fn set_backups(&self, namespace: &str, policy: &str, members: &[MemberBackup], now: i64) {
        let labels = |guest: &str| MemberLabels {
            namespace: namespace.to_string(),
            policy: policy.to_string(),
            guest: guest.to_string(),
        };
        let families = [&self.backup_last_success, &self.backup_age, &self.backup_fresh];
        self.keep_members(
            "backup",
            namespace,
            policy,
            members.iter().map(|m| m.guest.clone()).collect(),
            &families,
        );
        for m in members {
            let l = labels(&m.guest);
            self.backup_fresh.get_or_create(&l).set(m.fresh as i64);
            match m.last_success {
                Some(t) => {
                    self.backup_last_success.get_or_create(&l).set(t);
                    self.backup_age.get_or_create(&l).set((now - t).max(0));
                }
                None => {
                    self.backup_last_success.remove(&l);
                    self.backup_age.remove(&l);
                }
            }
        }
    }

    /// Set an UpdatePolicy's series: pending updates per member (`None`:
    /// not checked yet, no series), members of the last run by result.
    pub fn set_updates(&self, namespace: &str, policy: &str, pending: &[(String, Option<u32>)], last_run: &[(&'static str, usize)]) {
        let checked: Vec<String> = pending.iter().filter(|(_, n)| n.is_some()).map(|(g, _)| g.clone()).collect();
        self.keep_members("update", namespace, policy, checked, &[&self.updates_pending]);
        for (guest, n) in pending {
            if let Some(n) = n {
                let l = MemberLabels {
                    namespace: namespace.to_string(),
                    policy: policy.to_string(),
                    guest: guest.clone(),
                };
                self.updates_pending.get_or_create(&l).set(*n as i64);
            }
        }
        for (result, n) in last_run {
            let l = RunResultLabels {
                namespace: namespace.to_string(),
                policy: policy.to_string(),
                result,
            };
            self.update_run_members.get_or_create(&l).set(*n as i64);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("metrics encode into a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_series_follow_the_members() {
        let m = Metrics::default();
        let member = |guest: &str, t: Option<i64>, fresh: bool| MemberBackup {
            guest: guest.into(),
            last_success: t,
            fresh,
        };
        m.set_backups(
            "homelab",
            "nightly",
            &[member("web01", Some(1000), true), member("vmid-250", None, false)],
            1600,
        );
        let text = m.render();
        assert!(
            text.contains(r#"homelab_operator_backup_age_seconds{namespace="homelab",policy="nightly",guest="web01"} 600"#),
            "{text}"
        );
        assert!(text.contains(r#"homelab_operator_backup_fresh{namespace="homelab",policy="nightly",guest="vmid-250"} 0"#));
        assert!(!text.contains(r#"backup_last_success_timestamp_seconds{namespace="homelab",policy="nightly",guest="vmid-250"}"#));
        // web01 leaves the policy; then the policy goes.
        m.set_backups("homelab", "nightly", &[member("vmid-250", Some(1500), true)], 1600);
        assert!(!m.render().contains("guest=\"web01\""));
        m.set_backups("homelab", "nightly", &[], 1600);
        assert!(!m.render().contains("policy=\"nightly\""));
    }
}
