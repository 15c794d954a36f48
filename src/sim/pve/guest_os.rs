//! What runs inside a simulated guest, as far as updates see it: its
//! distribution, a package manager with pending updates, free disk, whether
//! its service answers, and the guest agent's exec family (`agent/exec`,
//! `agent/exec-status`). Scripts are not interpreted: each one the operator
//! sends starts with `# homelab-operator <verb> <args>` and the guest answers
//! that verb the way the real script's output reads (the scripts themselves
//! are run by a real shell in the tests). Anything else exits 127, as `sh`
//! does for a command it does not have.

use std::{collections::BTreeMap, time::Instant};

use serde_json::{Value, json};

use super::state::*;

/// A package with an update pending.
#[derive(Clone, Debug)]
pub struct SimPackage {
    pub name: String,
    pub from: String,
    pub to: String,
    pub security: bool,
}

impl SimPackage {
    pub fn new(name: &str, from: &str, to: &str, security: bool) -> Self {
        Self {
            name: name.into(),
            from: from.into(),
            to: to.into(),
            security,
        }
    }
}

/// The guest's operating system. Snapshots keep it; a rollback restores it.
#[derive(Clone, Debug)]
pub struct SimOs {
    /// `ID` of `/etc/os-release`: debian, ubuntu, alpine, fedora, arch.
    pub id: String,
    pub pending: Vec<SimPackage>,
    pub free_kib: u64,
    /// The agent allows `guest-exec` (qemu-ga 10 on RHEL-likes does not by default).
    pub exec_allowed: bool,
    /// The next update leaves the guest's service down.
    pub update_breaks_service: bool,
    /// The next update leaves `/var/run/reboot-required` behind.
    pub update_needs_reboot: bool,
    /// The next update exits with this code.
    pub update_exit: i32,
    /// How long an update runs (default: three task durations).
    pub update_time: Option<std::time::Duration>,
    pub service_ok: bool,
    pub reboot_required: bool,
    /// `/var/lib/homelab-operator/<run>`: each update run the guest has started.
    pub runs: BTreeMap<String, SimRun>,
    /// How many update commands have run here (a test's proof none ran twice).
    pub updates_run: u32,
}

impl Default for SimOs {
    fn default() -> Self {
        Self::debian()
    }
}

impl SimOs {
    pub fn debian() -> Self {
        Self {
            id: "debian".into(),
            pending: vec![
                SimPackage::new("curl", "8.14.1-2", "8.14.1-2+deb13u1", false),
                SimPackage::new("libssl3t64", "3.5.1-1", "3.5.1-1+deb13u1", true),
                SimPackage::new("openssl", "3.5.1-1", "3.5.1-1+deb13u1", true),
            ],
            free_kib: 8 << 20,
            exec_allowed: true,
            update_breaks_service: false,
            update_needs_reboot: false,
            update_exit: 0,
            update_time: None,
            service_ok: true,
            reboot_required: false,
            runs: BTreeMap::new(),
            updates_run: 0,
        }
    }

    pub fn with_id(id: &str) -> Self {
        Self {
            id: id.into(),
            ..Self::debian()
        }
    }
}

/// An update run inside the guest: its files once it has finished.
#[derive(Clone, Debug)]
pub struct SimRun {
    pub done_at: Instant,
    pub rc: i32,
    pub output: Vec<String>,
    pub reboot: bool,
}

/// A process the agent started.
#[derive(Clone, Debug)]
pub(super) struct SimExec {
    pub exitcode: i32,
    pub out: String,
    pub err: String,
}

impl State {
    /// `POST agent/exec`, `GET agent/exec-status`.
    pub(super) fn agent_exec(&mut self, method: &str, node: &str, vmid: u32, p: &BTreeMap<String, String>) -> Result<Value, SimError> {
        let delay = self.config.agent_delay;
        let update_time = self.config.task_duration * 3;
        let g = self.guest_mut(node, "qemu", vmid)?;
        super::agent::agent_answers(g, delay)?;
        if method == "GET" {
            let pid: u32 = p.get("pid").and_then(|v| v.parse().ok()).unwrap_or(0);
            let Some(e) = g.execs.get(&pid) else {
                return Err(fail(500, format!("Agent error: Invalid parameter 'pid': PID {pid} does not exist")));
            };
            let mut out = json!({"exited": 1, "exitcode": e.exitcode});
            if !e.out.is_empty() {
                out["out-data"] = json!(e.out);
            }
            if !e.err.is_empty() {
                out["err-data"] = json!(e.err);
            }
            return Ok(out);
        }
        if !g.os.exec_allowed {
            return Err(fail(
                500,
                "Agent error: Command guest-exec has been disabled: the command is not allowed",
            ));
        }
        let argv: Vec<&str> = p.get("command").map(|c| c.split('\0').collect()).unwrap_or_default();
        let done = run_command(&mut g.os, &argv, update_time);
        g.next_exec += 1;
        let pid = 1000 + g.next_exec;
        g.execs.insert(pid, done);
        Ok(json!({ "pid": pid }))
    }
}

/// Run what the operator sent: `sh -c <script>` with our header, or nothing the guest has.
fn run_command(os: &mut SimOs, argv: &[&str], update_time: std::time::Duration) -> SimExec {
    let script = match argv {
        ["sh", "-c", script] => *script,
        [program, ..] => return not_found(program),
        [] => return not_found(""),
    };
    let header = script.lines().next().unwrap_or_default();
    let words: Vec<&str> = header
        .strip_prefix("# homelab-operator ")
        .unwrap_or("")
        .split_whitespace()
        .collect();
    match words.as_slice() {
        ["probe"] => ok(format!("id={}\nlike=\nfree_kib={}\n", os.id, os.free_kib)),
        ["check", manager] => ok(listing(os, manager)),
        ["update", run] => {
            let took = os.update_time.unwrap_or(update_time);
            start_update(os, run, took)
        }
        ["result", run] => ok(result(os, run)),
        // The default `true`; any other command stands for "is my service healthy".
        ["validate"] if script.lines().nth(1).map(str::trim) == Some("true") => ok(String::new()),
        ["validate"] => match os.service_ok {
            true => ok(String::new()),
            false => SimExec {
                exitcode: 3,
                out: String::new(),
                err: "service is not running\n".into(),
            },
        },
        _ => not_found(script.split_whitespace().next().unwrap_or("")),
    }
}

fn ok(out: String) -> SimExec {
    SimExec {
        exitcode: 0,
        out,
        err: String::new(),
    }
}

fn not_found(program: &str) -> SimExec {
    SimExec {
        exitcode: 127,
        out: String::new(),
        err: format!("sh: 1: {program}: not found\n"),
    }
}

/// Pending updates as the package manager lists them.
fn listing(os: &SimOs, manager: &str) -> String {
    let mut out = String::new();
    if manager == "apt" {
        out.push_str("Listing...\n");
    }
    for p in &os.pending {
        let line = match manager {
            "apt" => {
                let suite = if p.security { "trixie-security" } else { "trixie-updates" };
                format!("{}/{suite} {} amd64 [upgradable from: {}]", p.name, p.to, p.from)
            }
            "apk" => format!(
                "{}-{} x86_64 {{{}}} (MIT) [upgradable from: {}-{}]",
                p.name, p.to, p.name, p.name, p.from
            ),
            "dnf" => format!("{}.x86_64    {}    updates", p.name, p.to),
            "pacman" => format!("{} {} -> {}", p.name, p.from, p.to),
            _ => p.name.clone(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    if manager == "dnf" {
        for p in os.pending.iter().filter(|p| p.security) {
            out.push_str(&format!("security: FEDORA-2026-1a2b3c Important/Sec. {}-{}.x86_64\n", p.name, p.to));
        }
    }
    out
}

/// The detached update: once per run (the run's directory is the guard).
fn start_update(os: &mut SimOs, run: &str, update_time: std::time::Duration) -> SimExec {
    if os.runs.contains_key(run) {
        return ok("already-started\n".into());
    }
    os.updates_run += 1;
    let mut output: Vec<String> = os.pending.iter().map(|p| format!("Setting up {} ({}) ...", p.name, p.to)).collect();
    let rc = os.update_exit;
    if rc != 0 {
        output.push(format!("E: Sub-process /usr/bin/dpkg returned an error code ({rc})"));
    } else {
        os.pending.clear();
    }
    if os.update_breaks_service {
        os.service_ok = false;
    }
    let reboot = os.update_needs_reboot;
    os.reboot_required |= reboot;
    os.runs.insert(
        run.to_string(),
        SimRun {
            done_at: Instant::now() + update_time,
            rc,
            output,
            reboot,
        },
    );
    ok("started\n".into())
}

/// `result <run>`: the files the run wrote, or that it still runs.
fn result(os: &SimOs, run: &str) -> String {
    let Some(r) = os.runs.get(run) else {
        return "absent\n--- output\n".into();
    };
    let mut out = match r.done_at <= Instant::now() {
        true => format!("rc={}\nreboot={}\n", r.rc, if r.reboot { "yes" } else { "no" }),
        false => "running\n".into(),
    };
    out.push_str("--- output\n");
    for l in r.output.iter().rev().take(20).rev() {
        out.push_str(l);
        out.push('\n');
    }
    out
}
