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

/// What one reconcile (or plan) of a kind hands back to whoever drives it.
#[derive(Debug)]
pub struct Outcome<S, P> {
    /// The status to write.
    pub status: S,
    /// What the reconcile did (or `plan` would do).
    pub plan: P,
    pub events: Vec<EventNote>,
    /// How soon to look again.
    pub requeue: Duration,
}

/// What one step of deleting a resource hands back.
#[derive(Debug)]
pub enum Cleanup<S> {
    /// Nothing left to do outside Kubernetes: remove the finalizer.
    Done(Vec<EventNote>),
    /// Work in flight; look again after the given time.
    Requeue {
        status: S,
        events: Vec<EventNote>,
        after: Duration,
    },
    /// A person must act (e.g. protection on); status says what.
    Blocked { status: S, events: Vec<EventNote> },
}

/// One line of what `plan` shows for a resource.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// `create`, `update`, `reboot`, `delete`, `adopt`, `pending`, `blocked` or `waiting`.
    pub op: &'static str,
    #[serde(skip)]
    pub symbol: char,
    pub what: String,
}

impl Change {
    /// `+` create, `~` update, `!` reboot, `-` delete, `=` adopt (ownership marks
    /// only), `?` pending, `x` blocked, `>` what a scheduled run would do, `.` waiting.
    pub fn new(symbol: char, what: impl Into<String>) -> Self {
        let op = match symbol {
            '+' => "create",
            '-' => "delete",
            '!' => "reboot",
            '~' => "update",
            '=' => "adopt",
            '?' => "pending",
            'x' => "blocked",
            '>' => "scheduled",
            _ => "waiting",
        };
        Self {
            op,
            symbol,
            what: what.into(),
        }
    }

    /// Whether this is a change to the outside system beyond adopting it (its
    /// ownership marks) or what a scheduled run will do when its time comes.
    pub fn changes_anything(&self) -> bool {
        self.op != "adopt" && self.op != "scheduled"
    }

    pub fn blocked(b: &Blocked) -> Self {
        Self::new('x', format!("{}: {}", b.reason, b.message))
    }
}
