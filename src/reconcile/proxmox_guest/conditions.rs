//! The conditions each outcome of a reconcile sets.

use super::*;

/// The same conditions when a task starts and while it is polled, so polling writes nothing.
pub(super) fn task_conditions(task: &TaskRef) -> [ConditionState; 3] {
    [
        ConditionState::new(
            api::CONDITION_READY,
            false,
            "TaskRunning",
            format!("waiting for {} ({})", task.operation, task.upid),
        ),
        ConditionState::new(
            api::CONDITION_RECONCILING,
            true,
            "TaskRunning",
            format!("{} in progress", task.operation),
        ),
        ConditionState::new(api::CONDITION_STALLED, false, "AsExpected", ""),
    ]
}

pub(super) fn is_ready(status: &ProxmoxGuestStatus) -> bool {
    api::find_condition(&status.conditions, api::CONDITION_READY).is_some_and(|c| c.status == "True")
}

pub(super) fn paused_conditions(status: &ProxmoxGuestStatus) -> Vec<ConditionState> {
    let ready = is_ready(status);
    vec![
        ConditionState::new(
            api::CONDITION_READY,
            ready,
            "Paused",
            "mode: Paused; the operator neither observes nor writes",
        ),
        ConditionState::new(api::CONDITION_RECONCILING, false, "Paused", ""),
        ConditionState::new(api::CONDITION_STALLED, false, "AsExpected", ""),
    ]
}

pub(super) fn stalled_conditions(b: &Blocked) -> Vec<ConditionState> {
    vec![
        ConditionState::new(api::CONDITION_READY, false, b.reason, b.message.clone()),
        ConditionState::new(api::CONDITION_RECONCILING, false, b.reason, ""),
        ConditionState::new(api::CONDITION_STALLED, true, b.reason, b.message.clone()),
    ]
}

/// Conditions when there is nothing to write now.
pub(super) fn settled_conditions(spec: &ProxmoxGuestSpec, guest: Option<&ObservedGuest>, plan: &Plan) -> Vec<ConditionState> {
    let stalled_ok = ConditionState::new(api::CONDITION_STALLED, false, "AsExpected", "");
    let (ready, reason, message) = match guest {
        None if spec.mode == ManagementMode::ObserveOnly => {
            (false, "GuestAbsent", "mode: ObserveOnly and the guest does not exist".to_string())
        }
        None => (false, "Creating", "guest not created yet".to_string()),
        Some(_) if plan.is_noop() => {
            let power = if spec.power == PowerState::Running { "running" } else { "stopped" };
            (true, "Reconciled", format!("guest matches the spec ({power})"))
        }
        Some(_) if spec.mode == ManagementMode::ObserveOnly => (
            false,
            "DriftDetected",
            format!(
                "mode: ObserveOnly; differences: {}",
                plan.pending.iter().map(|p| p.field.clone()).collect::<Vec<_>>().join(", ")
            ),
        ),
        Some(_) => {
            let reboot: Vec<_> = plan
                .pending
                .iter()
                .filter(|p| p.class == ChangeClass::NeedsReboot)
                .map(|p| p.field.clone())
                .collect();
            let recreate: Vec<_> = plan
                .pending
                .iter()
                .filter(|p| p.class == ChangeClass::NeedsRecreate)
                .map(|p| p.field.clone())
                .collect();
            if !recreate.is_empty() {
                (
                    false,
                    "NeedsRecreate",
                    format!("{} cannot change on an existing guest; re-create it to apply", recreate.join(", ")),
                )
            } else if !reboot.is_empty() {
                (
                    false,
                    "PendingReboot",
                    format!("{} take effect after a reboot (updatePolicy: Manual)", reboot.join(", ")),
                )
            } else {
                (
                    false,
                    "Waiting",
                    plan.pending
                        .iter()
                        .map(|p| format!("{}={}", p.field, p.current.clone().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            }
        }
    };
    vec![
        ConditionState::new(api::CONDITION_READY, ready, reason, message),
        ConditionState::new(api::CONDITION_RECONCILING, false, if ready { "Reconciled" } else { reason }, ""),
        stalled_ok,
    ]
}
