//! Notifications for a policy: once when it turns Degraded (and again when
//! what is wrong changes), once when it recovers. What was notified is kept
//! in status, so a restart or a new leader does not alert again.

use crate::{
    api::{self, BackupPolicyStatus, PolicyNotification},
    notify::{Event, Message, Notifier},
    reconcile::ownership::Identity,
};

/// The message to send, if the policy's health changed since the last one. Pure.
pub fn due(status: &BackupPolicyStatus, subject: &str, now: jiff::Timestamp) -> Option<(Message, Option<String>)> {
    let degraded = api::find_condition(&status.conditions, api::CONDITION_DEGRADED).filter(|c| c.status == "True");
    let problem = degraded.map(|c| format!("{}: {}", c.reason, c.message));
    let notified = status.notification.as_ref().and_then(|n| n.problem.clone());
    match (&problem, &notified) {
        (Some(p), n) if Some(p) != n.as_ref() => {
            let summary = degraded.map(|c| c.message.clone()).unwrap_or_default();
            Some((Message::new(Event::Failure, subject, summary), problem.clone()))
        }
        (None, Some(_)) => {
            let since = status
                .notification
                .as_ref()
                .and_then(|n| n.since.as_deref()?.parse::<jiff::Timestamp>().ok());
            let after = since.map(|s| format!(" after {}", crate::human::duration(now.duration_since(s).as_secs())));
            let fresh = status.fresh.clone().unwrap_or_default();
            Some((
                Message::new(
                    Event::Recovery,
                    subject,
                    format!("backups fresh again ({fresh} members){}", after.unwrap_or_default()),
                ),
                None,
            ))
        }
        _ => None,
    }
}

/// Send what is due to the policy's channels and record it in status.
pub async fn notify(notifier: &Notifier, channels: &[String], id: &Identity, status: &mut BackupPolicyStatus) {
    let now = jiff::Timestamp::now();
    let subject = format!("BackupPolicy {}/{}", id.namespace, id.name);
    let Some((msg, problem)) = due(status, &subject, now) else { return };
    let outcomes = notifier.send_all(channels, &msg).await;
    let since = match (&problem, &status.notification) {
        (None, _) => None,
        (Some(_), Some(n)) if n.problem.is_some() => n.since.clone(),
        (Some(_), _) => Some(now.to_string()),
    };
    status.notification = Some(PolicyNotification {
        problem,
        since,
        at: now.to_string(),
        event: msg.event.as_str().into(),
        channels: crate::notify::status_rows(outcomes),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConditionState;

    fn status(degraded: Option<(&str, &str)>) -> BackupPolicyStatus {
        let mut s = BackupPolicyStatus {
            fresh: Some("2/2".into()),
            ..Default::default()
        };
        let c = match degraded {
            Some((r, m)) => ConditionState::new(api::CONDITION_DEGRADED, true, r, m),
            None => ConditionState::new(api::CONDITION_DEGRADED, false, "AsExpected", ""),
        };
        s.conditions = api::merge_conditions(
            &[],
            &[c],
            Some(1),
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        s
    }

    #[test]
    fn once_per_problem_then_once_on_recovery() {
        let now = jiff::Timestamp::now();
        let mut s = status(Some(("BackupFailed", "backup failed for db01 (VMID 101): no space")));
        let (m, p) = due(&s, "BackupPolicy homelab/nightly", now).unwrap();
        assert_eq!(
            (m.event, m.summary.as_str()),
            (Event::Failure, "backup failed for db01 (VMID 101): no space")
        );
        s.notification = Some(PolicyNotification {
            problem: p,
            since: Some((now - jiff::SignedDuration::from_secs(250)).to_string()),
            ..Default::default()
        });
        assert!(due(&s, "x", now).is_none(), "already told");
        let mut other = status(Some(("BackupsNotFresh", "1 of 2 members not fresh: db01: no backup")));
        other.notification = s.notification.clone();
        assert_eq!(
            due(&other, "x", now).unwrap().0.event,
            Event::Failure,
            "a different problem is news"
        );
        let mut ok = status(None);
        ok.notification = s.notification.clone();
        let (m, p) = due(&ok, "x", now).unwrap();
        assert_eq!((m.event, p), (Event::Recovery, None));
        assert_eq!(m.summary, "backups fresh again (2/2 members) after 4m 10s");
        ok.notification = Some(PolicyNotification::default());
        assert!(due(&ok, "x", now).is_none(), "nothing to recover from");
    }
}
