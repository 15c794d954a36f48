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
        let all = job.get("all").is_some_and(|a| a == &json!(1));
        if job.get("vmid").is_some() && all {
            return Err(fail(500, "you can't specify both vmid and all"));
        }
        // VZDump::verify_vzdump_parameters.
        for (key, with) in [("exclude", "vmid"), ("pool", "vmid"), ("pool", "all")] {
            if job.contains_key(key) && job.contains_key(with) && (with != "all" || all) {
                return Err(param_fail(key, format!("option conflicts with option '{with}'")));
            }
        }
        if job.contains_key("exclude") && !all {
            return Err(param_fail("exclude", "option only makes sense in combination with option 'all'"));
        }
        // jobs.cfg is a section config: one line per value.
        if let Some((k, _)) = job.iter().find(|(_, v)| v.as_str().is_some_and(|s| s.contains('\n'))) {
            return Err(fail(500, format!("property '{k}' contains a line feed")));
        }
        Ok(())
    }

    /// The guests a job backs up: its VMIDs, every guest but those excluded, or a pool's.
    fn job_guests(&self, job: &BTreeMap<String, Value>) -> Vec<u32> {
        let text = |k: &str| job.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let list = |k: &str| -> Vec<u32> { text(k).split([',', ' ', ';']).filter_map(|v| v.trim().parse().ok()).collect() };
        let guests = self.guests.values().filter(|g| !g.template);
        if job.get("all") == Some(&json!(1)) {
            let exclude = list("exclude");
            return guests.filter(|g| !exclude.contains(&g.vmid)).map(|g| g.vmid).collect();
        }
        if job.contains_key("pool") {
            let pool = text("pool");
            return guests
                .filter(|g| g.pool.as_deref() == Some(pool.as_str()))
                .map(|g| g.vmid)
                .collect();
        }
        list("vmid")
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
            ("GET", "/cluster/backup-info/not-backed-up") => Ok(self.not_backed_up()),
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

    /// Guests (not templates) that no enabled job names (a job with `all` covers everyone).
    fn not_backed_up(&self) -> Value {
        let enabled = self
            .backup_jobs
            .values()
            .filter(|j| j.get("enabled").is_none_or(|e| e == &json!(1)));
        let mut covered = std::collections::BTreeSet::new();
        for j in enabled {
            covered.extend(self.job_guests(j));
        }
        let guests = self.guests.values().filter(|g| !g.template && !covered.contains(&g.vmid));
        Value::Array(
            guests
                .map(|g| json!({"vmid": g.vmid, "type": g.kind, "name": g.get("name").or_else(|| g.get("hostname"))}))
                .collect(),
        )
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

impl State {
    /// `GET /nodes/{node}/tasks`: newest first; finished tasks carry their exit status as `status`.
    pub(super) fn task_list(&mut self, node: &str, p: &BTreeMap<String, String>) -> Result<Value, SimError> {
        self.check_node(node)?;
        let since: u64 = p.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut list: Vec<Value> = self
            .tasks
            .iter()
            .filter(|t| t.node == node && t.starttime >= since)
            .filter(|t| p.get("typefilter").is_none_or(|f| &t.task_type == f))
            .map(|t| {
                let mut v = json!({"upid": t.upid, "node": t.node, "pid": t.pid, "pstart": t.pstart,
                    "starttime": t.starttime, "type": t.task_type, "id": t.id, "user": "root@pam"});
                if let Some(e) = &t.exitstatus {
                    v["status"] = json!(e);
                    v["endtime"] = json!(t.starttime + 2);
                }
                v
            })
            .collect();
        list.reverse();
        Ok(Value::Array(list))
    }

    /// What pvescheduler does when a job's time comes: one vzdump per node with the job's guests.
    pub(super) fn run_job_now(&mut self, id: &str) -> Result<Vec<String>, SimError> {
        let job = self.job_mut(id)?.clone();
        let text = |k: &str| job.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let vmids = self.job_guests(&job);
        let mut by_node: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for v in vmids {
            if let Some(g) = self.guests.get(&v) {
                by_node.entry(g.node.clone()).or_default().push(v);
            }
        }
        let storage = text("storage");
        Ok(by_node
            .into_iter()
            .map(|(node, vmids)| {
                let effect = Effect::Backup {
                    node: node.clone(),
                    vmids,
                    storage: storage.clone(),
                    notes: text("notes-template"),
                };
                self.start_task(&node, "vzdump", "", effect, None)
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect())
    }

    /// `POST /nodes/{node}/vzdump`: one task for the guests given.
    pub(super) fn vzdump(&mut self, node: &str, p: &BTreeMap<String, String>, failure: Option<String>) -> Result<Value, SimError> {
        self.check_node(node)?;
        let storage = p.get("storage").cloned().unwrap_or_else(|| "local".into());
        if !self.storage(&storage)?.accepts("backup") {
            return Err(fail(500, format!("storage '{storage}' does not support backups")));
        }
        let vmids: Vec<u32> = p
            .get("vmid")
            .map(String::as_str)
            .unwrap_or("")
            .split([',', ' '])
            .filter_map(|v| v.parse().ok())
            .collect();
        if vmids.is_empty() && p.get("all").is_none_or(|a| a != "1") {
            return Err(param_fail("vmid", "property is missing and it is not optional"));
        }
        let effect = Effect::Backup {
            node: node.into(),
            vmids,
            storage,
            notes: p.get("notes-template").cloned().unwrap_or_default(),
        };
        Ok(self.start_task(node, "vzdump", "", effect, failure))
    }

    /// What a finished vzdump did: a backup per guest on this node, an error
    /// line per guest that failed (or is not here); the log and whether any failed.
    pub(super) fn run_backup(&mut self, e: &Effect) -> (Vec<String>, bool) {
        let Effect::Backup {
            node,
            vmids,
            storage,
            notes,
        } = e
        else {
            return (vec![], false);
        };
        let mut log = vec![];
        let mut failed = false;
        for vmid in vmids {
            let guest = self.guests.get(vmid).filter(|g| &g.node == node).cloned();
            let error = match (&guest, self.backup_failures.get(vmid)) {
                (None, _) => Some(format!("unable to find VM {vmid} on node '{node}'")),
                (Some(_), Some(msg)) => Some(msg.clone()),
                (Some(_), None) => None,
            };
            let kind = guest.as_ref().map_or("qemu".to_string(), |g| g.kind.clone());
            log.push(format!("INFO: Starting Backup of VM {vmid} ({kind})"));
            match error {
                Some(msg) => {
                    failed = true;
                    log.push(format!("ERROR: Backup of VM {vmid} failed - {msg}"));
                }
                None => {
                    let g = guest.expect("found");
                    let name = g.get("name").or_else(|| g.get("hostname")).unwrap_or_default();
                    self.store_backup(super::storage::SimBackup {
                        storage: storage.clone(),
                        vmid: *vmid,
                        kind: kind.clone(),
                        ctime: now_epoch(),
                        size: g.memory_bytes().max(1 << 30),
                        verified: None,
                        protected: false,
                        notes: notes.replace("{{guestname}}", &name).replace("{{vmid}}", &vmid.to_string()),
                        config: g.config.clone(),
                    });
                    log.push(format!("INFO: Finished Backup of VM {vmid} (00:00:02)"));
                }
            }
        }
        log.push(
            if failed {
                "INFO: Backup job finished with errors"
            } else {
                "INFO: Backup job finished successfully"
            }
            .into(),
        );
        (log, failed)
    }

    /// The lines of a task's log as `/tasks/{upid}/log` answers them.
    pub(super) fn task_log(&mut self, node: &str, upid: &str) -> Result<Value, SimError> {
        let st = self.task_status(node, upid)?;
        let extra = self
            .tasks
            .iter()
            .find(|t| t.upid == upid)
            .map(|t| t.log.clone())
            .unwrap_or_default();
        let mut lines = vec!["starting task".to_string()];
        lines.extend(extra);
        match st["exitstatus"].as_str() {
            None => {}
            Some("OK") => lines.push("TASK OK".into()),
            Some(e) => lines.push(format!("TASK ERROR: {e}")),
        }
        Ok(Value::Array(
            lines.into_iter().enumerate().map(|(i, t)| json!({"n": i + 1, "t": t})).collect(),
        ))
    }
}
