//! Scheduled vzdump jobs (`/cluster/backup`), kept as PVE keeps them in
//! `jobs.cfg` and answered in its shapes (`prune-backups` as an object of strings).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::props::*;
use super::state::*;

/// A calendar event as systemd-style PVE accepts it (the shapes, not every value check).
fn calendar_event_ok(s: &str) -> bool {
    let re = regex::Regex::new(
        r"^(minutely|hourly|daily|weekly|monthly|yearly|annually|quarterly|semiannually|((mon|tue|wed|thu|fri|sat|sun)((\.\.|,)(mon|tue|wed|thu|fri|sat|sun))*)?( ?[0-9*]+([-/.,:][0-9*]+)*)*)$",
    )
    .expect("regex");
    !s.trim().is_empty() && re.is_match(s.trim())
}

impl State {
    fn job_mut(&mut self, id: &str) -> Result<&mut BTreeMap<String, Value>, SimError> {
        self.backup_jobs
            .get_mut(id)
            .ok_or_else(|| fail(500, format!("job '{id}' does not exist")))
    }

    /// The checks vzdump makes on a job's options, with its texts.
    fn check_job(&self, job: &BTreeMap<String, Value>) -> Result<(), SimError> {
        if let Some(s) = job.get("schedule").and_then(Value::as_str)
            && !calendar_event_ok(s)
        {
            return Err(param_fail("schedule", format!("unable to parse calendar event '{s}'")));
        }
        if let Some(st) = job.get("storage").and_then(Value::as_str)
            && !self.storage(st)?.accepts("backup")
        {
            return Err(fail(500, format!("storage '{st}' does not support backups")));
        }
        if job.get("vmid").is_some() && job.get("all").is_some_and(|a| a == &json!(1)) {
            return Err(fail(500, "you can't specify both vmid and all"));
        }
        Ok(())
    }

    fn job_value(key: &str, v: &str) -> Value {
        match key {
            "enabled" | "all" | "remove" | "protected" | "repeat-missed" => json!(v.parse::<u8>().unwrap_or(0)),
            // Stored as a property string, answered as an object of strings.
            "prune-backups" => Value::Object(
                split_props(v)
                    .into_iter()
                    .map(|(k, v)| (k.unwrap_or_else(|| "keep-all".into()), json!(v)))
                    .collect(),
            ),
            _ => json!(v),
        }
    }

    pub(super) fn backup_routes(&mut self, method: &str, t: &str, p: &BTreeMap<String, String>) -> Result<Value, SimError> {
        let id = p.get("id").cloned().unwrap_or_default();
        match (method, t) {
            ("GET", "/cluster/backup") => Ok(Value::Array(self.backup_jobs.values().map(|j| self.job_answer(j)).collect())),
            ("POST", "/cluster/backup") => {
                let id = if id.is_empty() {
                    self.next_pid += 1;
                    format!("backup-{:08x}-{:04x}", 0x5e1f_0000u32 + self.next_pid, self.next_pid & 0xffff)
                } else {
                    id
                };
                if self.backup_jobs.contains_key(&id) {
                    return Err(fail(500, format!("job '{id}' already exists")));
                }
                let mut job: BTreeMap<String, Value> = p.iter().map(|(k, v)| (k.clone(), Self::job_value(k, v))).collect();
                job.insert("id".into(), json!(id));
                job.insert("type".into(), json!("vzdump"));
                self.check_job(&job)?;
                self.backup_jobs.insert(id, job);
                Ok(Value::Null)
            }
            ("GET", "/cluster/backup/{id}") => {
                let job = self.job_mut(&id)?.clone();
                Ok(self.job_answer(&job))
            }
            ("PUT", "/cluster/backup/{id}") => {
                let mut job = self.job_mut(&id)?.clone();
                for (k, v) in p.iter().filter(|(k, _)| !matches!(k.as_str(), "id" | "delete")) {
                    job.insert(k.clone(), Self::job_value(k, v));
                }
                for k in p
                    .get("delete")
                    .map(String::as_str)
                    .unwrap_or("")
                    .split(',')
                    .filter(|k| !k.is_empty())
                {
                    job.remove(k);
                }
                self.check_job(&job)?;
                *self.job_mut(&id)? = job;
                Ok(Value::Null)
            }
            ("DELETE", "/cluster/backup/{id}") => {
                self.job_mut(&id)?;
                self.backup_jobs.remove(&id);
                Ok(Value::Null)
            }
            _ => Err(fail(501, format!("Method '{method} {t}' not implemented"))),
        }
    }

    fn job_answer(&self, job: &BTreeMap<String, Value>) -> Value {
        let mut out = serde_json::Map::from_iter(job.clone());
        out.entry("enabled").or_insert(json!(1));
        if job.get("schedule").is_some() {
            out.insert("next-run".into(), json!(now_epoch() + 3600));
        }
        Value::Object(out)
    }
}
