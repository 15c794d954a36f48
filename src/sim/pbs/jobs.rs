//! `/config/{prune,verify,sync}` job sections and `/admin/{kind}` with their
//! run state, as PBS keeps them (one section-config file per kind, digests).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::state::{Effect, SimError, State, bad, digest, now};

const KINDS: [&str; 3] = ["prune", "verify", "sync"];

fn kind_of(t: &str) -> Option<&'static str> {
    KINDS.into_iter().find(|k| t.split('/').nth(2) == Some(*k))
}

/// A calendar event in the shapes PBS's proxmox-time parser takes.
pub(super) fn check_calendar(s: &str) -> Result<(), SimError> {
    let re = regex::Regex::new(
        r"^(minutely|hourly|daily|weekly|monthly|yearly|annually|quarterly|semiannually|((mon|tue|wed|thu|fri|sat|sun)((\.\.|,)(mon|tue|wed|thu|fri|sat|sun))*)?( ?[0-9*]+([-/.,:][0-9*]+)*)*)$",
    )
    .expect("regex");
    match !s.trim().is_empty() && re.is_match(s.trim()) {
        true => Ok(()),
        false => Err(bad(format!(
            "parameter verification failed - 'schedule': unable to parse calendar event '{s}'"
        ))),
    }
}

/// Optimistic locking: a stale digest is refused with PBS's text.
pub(super) fn check_digest(p: &BTreeMap<String, String>, section: &impl serde::Serialize) -> Result<(), SimError> {
    match p.get("digest") {
        Some(d) if *d != digest(section) => Err(bad("detected modified configuration - file changed by other user? Try again.")),
        _ => Ok(()),
    }
}

/// Form values into the section's typed fields (booleans and integers as JSON).
fn typed(k: &str, v: &str) -> Value {
    if let Ok(n) = v.parse::<i64>()
        && (k.starts_with("keep-") || matches!(k, "outdated-after" | "max-depth" | "transfer-last"))
    {
        return json!(n);
    }
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" if is_bool(k) => json!(true),
        "0" | "false" | "no" | "off" if is_bool(k) => json!(false),
        _ => json!(v),
    }
}

fn is_bool(k: &str) -> bool {
    matches!(
        k,
        "disable"
            | "ignore-verified"
            | "remove-vanished"
            | "encrypted-only"
            | "verified-only"
            | "resync-corrupt"
            | "run-on-mount"
            | "unmount-on-done"
    )
}

fn check_job(s: &State, kind: &str, job: &BTreeMap<String, Value>) -> Result<(), SimError> {
    if let Some(sched) = job.get("schedule").and_then(Value::as_str) {
        check_calendar(sched)?;
    }
    let store = job.get("store").and_then(Value::as_str).unwrap_or_default();
    s.store(store)?;
    if kind == "sync"
        && let Some(r) = job.get("remote").and_then(Value::as_str)
        && !s.remotes.iter().any(|x| x == r)
    {
        return Err(bad(format!("remote '{r}' does not exist.")));
    }
    Ok(())
}

pub(super) fn dispatch(s: &mut State, method: &str, t: &str, p: &BTreeMap<String, String>) -> Result<Value, SimError> {
    let Some(kind) = kind_of(t) else {
        return Err(SimError(404, format!("Path '/api2/json{t}' not found.")));
    };
    let id = p.get("id").cloned().unwrap_or_default();
    let data = |v: Value| Ok(json!({ "data": v }));
    match (method, t.split('/').nth(1), t.ends_with("{id}"), t.ends_with("/run")) {
        ("GET", Some("admin"), false, false) => data(admin_list(s, kind, p)),
        ("POST", Some("admin"), _, true) => data(json!(run_job(s, kind, &id)?)),
        ("GET", Some("config"), false, _) => {
            let list: Vec<Value> = s.jobs[kind].values().map(|j| json!(j)).collect();
            Ok(json!({"data": list, "digest": digest(&s.jobs[kind])}))
        }
        ("POST", Some("config"), false, _) => {
            if s.jobs[kind].contains_key(&id) {
                return Err(bad(format!("job '{id}' already exists.")));
            }
            let job: BTreeMap<String, Value> = p.iter().map(|(k, v)| (k.clone(), typed(k, v))).collect();
            check_job(s, kind, &job)?;
            s.jobs.get_mut(kind).expect("kind").insert(id, job);
            data(Value::Null)
        }
        ("GET", Some("config"), true, _) => {
            let job = s.jobs[kind]
                .get(&id)
                .ok_or_else(|| SimError(404, format!("job '{id}' does not exist.")))?;
            Ok(json!({"data": job, "digest": digest(&s.jobs[kind])}))
        }
        ("PUT", Some("config"), true, _) => {
            check_digest(p, &s.jobs[kind])?;
            let mut job = s.jobs[kind]
                .get(&id)
                .cloned()
                .ok_or_else(|| SimError(404, format!("job '{id}' does not exist.")))?;
            for (k, v) in p.iter().filter(|(k, _)| !matches!(k.as_str(), "id" | "delete" | "digest")) {
                job.insert(k.clone(), typed(k, v));
            }
            for k in p
                .get("delete")
                .map(String::as_str)
                .unwrap_or("")
                .split(['\n', ','])
                .filter(|k| !k.is_empty())
            {
                job.remove(k);
            }
            check_job(s, kind, &job)?;
            s.jobs.get_mut(kind).expect("kind").insert(id, job);
            data(Value::Null)
        }
        ("DELETE", Some("config"), true, _) => {
            check_digest(p, &s.jobs[kind])?;
            if s.jobs.get_mut(kind).expect("kind").remove(&id).is_none() {
                return Err(SimError(404, format!("job '{id}' does not exist.")));
            }
            s.job_runs.remove(&(kind.to_string(), id));
            data(Value::Null)
        }
        _ => Err(SimError(404, format!("Path '/api2/json{t}' not found."))),
    }
}

/// Start a job's task now, as its schedule (or `POST /admin/{kind}/{id}/run`) does.
pub(super) fn run_job(s: &mut State, kind: &str, id: &str) -> Result<String, SimError> {
    let job = s
        .jobs
        .get(kind)
        .and_then(|j| j.get(id))
        .ok_or_else(|| SimError(404, format!("job '{id}' does not exist.")))?;
    let store = job.get("store").and_then(Value::as_str).unwrap_or_default().to_string();
    let worker = if kind == "verify" {
        "verificationjob".to_string()
    } else {
        format!("{kind}job")
    };
    let effect = Effect::Job {
        kind: kind.to_string(),
        id: id.to_string(),
    };
    Ok(s.start_task(&worker, &format!("{store}:{id}"), effect))
}

/// `GET /admin/{kind}`: each job's config plus `next-run` and its last run.
fn admin_list(s: &State, kind: &str, p: &BTreeMap<String, String>) -> Value {
    let direction = p.get("sync-direction").map_or("pull", String::as_str);
    let list = s.jobs[kind]
        .iter()
        .filter(|(_, j)| p.get("store").is_none_or(|st| j.get("store").and_then(Value::as_str) == Some(st)))
        .filter(|(_, j)| {
            kind != "sync" || direction == "all" || j.get("sync-direction").and_then(Value::as_str).unwrap_or("pull") == direction
        })
        .map(|(id, j)| {
            let mut v = json!(j);
            if j.get("schedule").is_some() && j.get("disable") != Some(&json!(true)) {
                v["next-run"] = json!(now() + 3600);
            }
            for (k, x) in s.job_runs.get(&(kind.to_string(), id.clone())).into_iter().flatten() {
                v[k] = x.clone();
            }
            v
        })
        .collect();
    Value::Array(list)
}

pub(super) fn task_status(s: &State, upid: &str) -> Result<Value, SimError> {
    let t = s
        .tasks
        .iter()
        .find(|t| t.upid == upid)
        .ok_or_else(|| bad(format!("no such task '{upid}'")))?;
    let mut v = json!({
        "upid": t.upid, "node": "pbs", "pid": 2587, "pstart": 115411, "starttime": t.started,
        "type": t.worker_type, "id": upid.split(':').nth(7).unwrap_or(""), "user": "root@pam",
        "status": if t.exit.is_some() { "stopped" } else { "running" },
    });
    if let Some(e) = &t.exit {
        v["exitstatus"] = json!(e);
    }
    Ok(v)
}
