//! How a script gets into a guest and its output comes back: through the
//! QEMU guest agent (`agent/exec`, polled with `agent/exec-status`), no SSH.

use std::time::Duration;

use futures::future::BoxFuture;

use crate::{
    providers::pve::{GuestKind, PveUpdateApi},
    reconcile::ReconcileError,
};

/// The member as the cluster shows it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guest {
    pub name: String,
    pub vmid: u32,
    pub kind: GuestKind,
    pub node: String,
    pub running: bool,
    /// A PVE lock on its config (`snapshot`, `backup`, …).
    pub lock: Option<String>,
}

/// A script that ran to its end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ran {
    pub exit: i32,
    pub out: String,
    pub err: String,
}

impl Ran {
    /// Its last line of error output, or of output: what a person reads first.
    pub fn last_words(&self) -> String {
        let text = if self.err.trim().is_empty() { &self.out } else { &self.err };
        text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
    }
}

#[derive(Debug)]
pub enum ShellError {
    /// The guest cannot run it now, and says why (agent not running or not
    /// configured, exec disabled, guest stopped).
    Unavailable(String),
    /// The call failed.
    Call(ReconcileError),
}

/// Runs a script inside a guest until it ends.
pub trait GuestShell: Send + Sync {
    fn run<'a>(&'a self, guest: &'a Guest, script: &'a str) -> BoxFuture<'a, Result<Ran, ShellError>>;
}

/// QEMU guests through their agent, containers over SSH when the policy
/// says how (else why not: the reason they are skipped).
pub struct Routed<'a> {
    pub agent: &'a dyn GuestShell,
    pub ssh: Result<&'a dyn GuestShell, &'a str>,
}

impl GuestShell for Routed<'_> {
    fn run<'a>(&'a self, guest: &'a Guest, script: &'a str) -> BoxFuture<'a, Result<Ran, ShellError>> {
        match (guest.kind, self.ssh) {
            (GuestKind::Qemu, _) => self.agent.run(guest, script),
            (GuestKind::Lxc, Ok(ssh)) => ssh.run(guest, script),
            (GuestKind::Lxc, Err(why)) => Box::pin(async move { Err(ShellError::Unavailable(why.to_string())) }),
        }
    }
}

/// How long a script may take before it counts as unanswered (the update
/// itself runs detached: only checks and probes run this long).
const SCRIPT_LIMIT: Duration = Duration::from_secs(180);

/// Through the QEMU guest agent.
pub struct AgentShell<'a, P> {
    pub api: &'a P,
}

/// PVE's answers that mean "this guest cannot exec now", not a failed call.
const UNAVAILABLE: &[&str] = &[
    "guest agent is not running",
    "No QEMU guest agent configured",
    "has been disabled",
    "not running",
];

fn classify(step: &str, e: crate::providers::pve::Error) -> ShellError {
    match &e {
        crate::providers::pve::Error::Api { message, .. } if UNAVAILABLE.iter().any(|m| message.contains(m)) => {
            ShellError::Unavailable(message.trim().to_string())
        }
        _ => ShellError::Call(ReconcileError::pve(step, e)),
    }
}

impl<P: PveUpdateApi> GuestShell for AgentShell<'_, P> {
    fn run<'a>(&'a self, guest: &'a Guest, script: &'a str) -> BoxFuture<'a, Result<Ran, ShellError>> {
        Box::pin(async move {
            let argv = ["sh".to_string(), "-c".into(), script.into()];
            let pid = self
                .api
                .agent_exec(&guest.node, guest.vmid, &argv)
                .await
                .map_err(|e| classify("starting a command through the guest agent", e))?;
            let started = tokio::time::Instant::now();
            let mut wait = Duration::from_millis(50);
            loop {
                let s = self
                    .api
                    .agent_exec_status(&guest.node, guest.vmid, pid)
                    .await
                    .map_err(|e| classify("reading a command's result through the guest agent", e))?;
                if s.exited {
                    let exit = s.exitcode.or(s.signal.map(|n| 128 + n)).unwrap_or(-1) as i32;
                    return Ok(Ran {
                        exit,
                        out: s.out,
                        err: s.err,
                    });
                }
                if started.elapsed() > SCRIPT_LIMIT {
                    return Err(ShellError::Unavailable(format!(
                        "a command did not finish within {}s",
                        SCRIPT_LIMIT.as_secs()
                    )));
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        })
    }
}
