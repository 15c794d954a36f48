//! Fault injection shared by the simulators: latency, scripted faults for
//! exact tests, and random faults for soak runs.

use std::{collections::VecDeque, time::Duration};

use rand::{Rng, SeedableRng, rngs::StdRng};

#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Answer with this status and message (e.g. 500, 595).
    Status(u16, String),
    /// Hold the request far longer than any client timeout.
    Timeout,
    /// Close the connection without answering.
    Drop,
    /// Refuse with the PVE lock error of the guest in the path.
    Locked,
    /// Accept the call, start the task, and let the task fail with this text.
    FailTask(String),
}

/// A fault for the next `times` requests matching method and path substring.
#[derive(Clone, Debug)]
pub struct ScriptedFault {
    pub method: Option<String>,
    pub path_contains: String,
    pub kind: FaultKind,
    pub times: u32,
}

impl ScriptedFault {
    pub fn new(method: &str, path_contains: &str, kind: FaultKind, times: u32) -> Self {
        Self {
            method: Some(method.to_string()),
            path_contains: path_contains.to_string(),
            kind,
            times,
        }
    }
}

#[derive(Debug)]
pub struct Faults {
    pub latency: Duration,
    pub scripted: VecDeque<ScriptedFault>,
    /// Probabilities per request (0.0 = never).
    pub p_5xx: f64,
    pub p_timeout: f64,
    pub p_drop: f64,
    pub p_lock: f64,
    pub p_task_fail: f64,
    rng: StdRng,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            scripted: VecDeque::new(),
            p_5xx: 0.0,
            p_timeout: 0.0,
            p_drop: 0.0,
            p_lock: 0.0,
            p_task_fail: 0.0,
            rng: StdRng::seed_from_u64(7),
        }
    }
}

impl Faults {
    /// The fault (if any) for this request; scripted faults first.
    pub fn pick(&mut self, method: &str, path: &str, is_write: bool) -> Option<FaultKind> {
        if let Some(i) = self
            .scripted
            .iter()
            .position(|f| f.method.as_deref().is_none_or(|m| m == method) && path.contains(&f.path_contains))
        {
            let f = &mut self.scripted[i];
            let kind = f.kind.clone();
            f.times -= 1;
            if f.times == 0 {
                self.scripted.remove(i);
            }
            return Some(kind);
        }
        let roll = |rng: &mut StdRng, p: f64| p > 0.0 && rng.random_bool(p.min(1.0));
        if roll(&mut self.rng, self.p_drop) {
            return Some(FaultKind::Drop);
        }
        if roll(&mut self.rng, self.p_timeout) {
            return Some(FaultKind::Timeout);
        }
        if roll(&mut self.rng, self.p_5xx) {
            // What a busy cluster answers: a plain 500, a cluster-filesystem
            // lock timeout, pveproxy's 595 for a node it cannot reach.
            let (status, text) = [
                (500, "Internal Server Error"),
                (500, "cfs-lock 'file-user_cfg' error: got lock request timeout"),
                (595, "Connection refused"),
            ][self.rng.random_range(0..3)];
            return Some(FaultKind::Status(status, text.into()));
        }
        if is_write && roll(&mut self.rng, self.p_lock) {
            return Some(FaultKind::Locked);
        }
        if is_write && roll(&mut self.rng, self.p_task_fail) {
            return Some(FaultKind::FailTask("simulated task failure".into()));
        }
        None
    }
}
