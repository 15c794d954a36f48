//! What every kind's reconcile hands back to the controller and the one-shot
//! commands: its status, events, why it is blocked, and when to look again.

use std::time::Duration;

/// An event the caller publishes (Kubernetes Event, or a line on the console).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

impl EventNote {
    pub fn normal(reason: &'static str, note: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            note: note.into(),
        }
    }
    pub fn warning(reason: &'static str, note: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            note: note.into(),
        }
    }
}

/// Why nothing can be done until a person acts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub reason: &'static str,
    pub message: String,
}

impl Blocked {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Ready / Reconciling / Stalled for kinds whose work finishes within one
/// reconcile: `reason` and `message` go to each condition that is true.
pub fn conditions(ready: bool, reconciling: bool, stalled: bool, reason: &'static str, message: &str) -> [crate::api::ConditionState; 3] {
    use crate::api::{CONDITION_READY, CONDITION_RECONCILING, CONDITION_STALLED, ConditionState};
    [
        ConditionState::new(CONDITION_READY, ready, reason, message),
        ConditionState::new(CONDITION_RECONCILING, reconciling, reason, if reconciling { message } else { "" }),
        ConditionState::new(
            CONDITION_STALLED,
            stalled,
            if stalled { reason } else { "AsExpected" },
            if stalled { message } else { "" },
        ),
    ]
}

/// How soon to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requeue(pub Duration);

pub const POLL_TASK: Duration = Duration::from_secs(2);
pub const VERIFY_SOON: Duration = Duration::from_secs(1);
pub const RESYNC: Duration = Duration::from_secs(300);
