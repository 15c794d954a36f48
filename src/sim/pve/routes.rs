//! Which call does what: the simulator's routing table.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::props::*;
use super::state::*;

impl State {
    pub fn dispatch(
        &mut self,
        method: &str,
        template: &str,
        p: &BTreeMap<String, String>,
        failure: Option<String>,
    ) -> Result<Value, SimError> {
        let node = p.get("node").cloned().unwrap_or_default();
        let vmid: u32 = p.get("vmid").and_then(|v| v.parse().ok()).unwrap_or(0);
        let kind = if template.contains("/lxc") { "lxc" } else { "qemu" };
        let t = template.replace("/lxc", "/{kind}").replace("/qemu", "/{kind}");
        if t.starts_with("/cluster/backup") {
            return self.backup_routes(method, &t, p);
        }
        if t.contains("/firewall/") {
            return self.firewall(method, &t, &node, kind, vmid, p);
        }
        if t.ends_with("/agent/exec") || t.ends_with("/agent/exec-status") {
            return self.agent_exec(method, &node, vmid, p);
        }
        if method == "GET" && (t.contains("/agent/") || t.ends_with("/interfaces")) {
            return self.guest_interfaces(&t, &node, kind, vmid);
        }
        match (method, t.as_str()) {
            ("GET", "/version") => Ok(json!({"version": "9.1.1", "release": "9.1", "repoid": "a1b2c3d4"})),
            ("GET", "/cluster/resources") => Ok(self.cluster_resources(p.get("type").map(String::as_str))),
            ("GET", "/cluster/nextid") => self.next_id(p.get("vmid")),
            ("GET", "/nodes") => Ok(self.nodes()),
            ("GET", "/nodes/{node}/tasks") => self.task_list(&node, p),
            ("GET", "/nodes/{node}/tasks/{upid}/status") => self.task_status(&node, p.get("upid").map(String::as_str).unwrap_or("")),
            ("GET", "/nodes/{node}/tasks/{upid}/log") => self.task_log(&node, p.get("upid").map(String::as_str).unwrap_or("")),
            ("POST", "/nodes/{node}/vzdump") => self.vzdump(&node, p, failure),
            ("GET", "/nodes/{node}/storage") => self.node_storages(&node, p),
            ("GET", "/nodes/{node}/storage/{storage}/content") => self.storage_content(
                &node,
                p.get("storage").map_or("", String::as_str),
                p.get("content").map(String::as_str),
            ),
            ("GET", "/nodes/{node}/network") => self.node_network(&node, p.get("type").map(String::as_str)),
            ("POST", "/nodes/{node}/{kind}") => self.create(&node, kind, p, failure),
            ("POST", "/nodes/{node}/{kind}/{vmid}/clone") => self.clone_guest(&node, kind, vmid, p, failure),
            ("GET", "/nodes/{node}/{kind}/{vmid}/config") => {
                let current = p.get("current").is_some_and(|v| v == "1");
                let g = self.guest_mut(&node, kind, vmid)?;
                let mut cfg = g.config.clone();
                if !current {
                    for (k, v) in &g.pending {
                        cfg.insert(k.clone(), typed_value(kind, k, v));
                    }
                }
                let mut out = serde_json::Map::from_iter(cfg);
                out.insert("digest".into(), json!(format!("{:040x}", out.len() as u64 * 7919 + vmid as u64)));
                if let Some(l) = &g.lock {
                    out.insert("lock".into(), json!(l));
                }
                Ok(Value::Object(out))
            }
            ("GET", "/nodes/{node}/{kind}/{vmid}/pending") => {
                let g = self.guest_mut(&node, kind, vmid)?;
                let mut keys: BTreeSet<&String> = g.config.keys().collect();
                keys.extend(g.pending.keys());
                keys.extend(g.pending_delete.iter());
                Ok(Value::Array(
                    keys.into_iter()
                        .map(|k| {
                            let mut e = serde_json::Map::new();
                            e.insert("key".into(), json!(k));
                            if let Some(v) = g.config.get(k) {
                                e.insert("value".into(), v.clone());
                            }
                            if let Some(v) = g.pending.get(k) {
                                e.insert("pending".into(), typed_value(kind, k, v));
                            }
                            if g.pending_delete.contains(k) {
                                e.insert("delete".into(), json!(1));
                            }
                            Value::Object(e)
                        })
                        .collect(),
                ))
            }
            ("POST", "/nodes/{node}/{kind}/{vmid}/config") | ("PUT", "/nodes/{node}/{kind}/{vmid}/config") => {
                self.write_config(&node, kind, vmid, p)?;
                Ok(Value::Null)
            }
            ("PUT", "/nodes/{node}/{kind}/{vmid}/resize") => {
                let disk = p.get("disk").cloned().unwrap_or_default();
                let size = p.get("size").cloned().unwrap_or_default();
                let g = self.guest_mut(&node, kind, vmid)?;
                Self::unlocked(g)?;
                let Some(cur) = g.get(&disk) else {
                    return Err(fail(500, format!("disk '{disk}' does not exist")));
                };
                let cur_bytes = prop(&split_props(&cur), "size").and_then(parse_size).unwrap_or(0);
                let new_bytes = match size.strip_prefix('+') {
                    Some(delta) => cur_bytes + parse_size(delta).unwrap_or(0),
                    None => parse_size(&size).unwrap_or(0),
                };
                if new_bytes < cur_bytes {
                    return Err(fail(500, "shrinking disks is not supported"));
                }
                Ok(self.start_task(
                    &node,
                    "resize",
                    &vmid.to_string(),
                    Effect::Resize {
                        vmid,
                        disk,
                        bytes: new_bytes,
                    },
                    failure,
                ))
            }
            ("GET", "/nodes/{node}/{kind}/{vmid}/status/current") => {
                let ha = self.ha_status(vmid);
                let g = self.guest_mut(&node, kind, vmid)?;
                let mut out = json!({
                    "vmid": vmid, "status": if g.running { "running" } else { "stopped" },
                    "name": g.get("name").or_else(|| g.get("hostname")), "maxmem": g.memory_bytes(), "cpus": 1,
                    "uptime": g.uptime(), "ha": ha,
                });
                if let Some(l) = &g.lock {
                    out["lock"] = json!(l);
                }
                if kind == "qemu" {
                    out["qmpstatus"] = json!(if g.running { "running" } else { "stopped" });
                }
                Ok(out)
            }
            ("POST", "/nodes/{node}/{kind}/{vmid}/status/start")
            | ("POST", "/nodes/{node}/{kind}/{vmid}/status/stop")
            | ("POST", "/nodes/{node}/{kind}/{vmid}/status/shutdown")
            | ("POST", "/nodes/{node}/{kind}/{vmid}/status/reboot") => {
                let action = t.rsplit('/').next().unwrap_or_default();
                let g = self.guest_mut(&node, kind, vmid)?;
                Self::unlocked(g)?;
                if g.template {
                    return Err(fail(500, "you can't start a VM if it's a template"));
                }
                if action != "reboot" && self.ha_managed(vmid) {
                    return Ok(self.ha_request(&node, vmid, action, failure));
                }
                let (effect, verb) = match action {
                    "start" => (Effect::Start(vmid), "start"),
                    "reboot" => (Effect::Reboot(vmid), "reboot"),
                    "shutdown" => (Effect::Stop(vmid), "shutdown"),
                    _ => (Effect::Stop(vmid), "stop"),
                };
                let prefix = if kind == "lxc" { "vz" } else { "qm" };
                Ok(self.start_task(&node, &format!("{prefix}{verb}"), &vmid.to_string(), effect, failure))
            }
            ("DELETE", "/nodes/{node}/{kind}/{vmid}") => {
                let g = self.guest_mut(&node, kind, vmid)?;
                Self::unlocked(g)?;
                if g.get("protection").as_deref() == Some("1") {
                    return Err(fail(500, format!("can't remove {} {vmid} - protection mode enabled", g.what())));
                }
                if g.running {
                    return Err(fail(500, format!("{} {vmid} is running - destroy failed", g.what())));
                }
                self.check_ha_delete(vmid, p.get("purge").is_some_and(|v| v == "1"))?;
                let g = self.guest_mut(&node, kind, vmid)?;
                g.lock = Some("destroyed".into());
                let task = if kind == "lxc" { "vzdestroy" } else { "qmdestroy" };
                Ok(self.start_task(&node, task, &vmid.to_string(), Effect::Delete(vmid), failure))
            }
            ("GET", "/nodes/{node}/{kind}/{vmid}/snapshot") => {
                let g = self.guest_mut(&node, kind, vmid)?;
                let mut list: Vec<Value> = g
                    .snapshots
                    .iter()
                    .map(|(n, (_, t))| json!({"name": n, "snaptime": t, "description": ""}))
                    .collect();
                list.push(json!({"name": "current", "description": "You are here!", "running": g.running as u8}));
                Ok(Value::Array(list))
            }
            ("POST", "/nodes/{node}/{kind}/{vmid}/snapshot") => {
                let name = p.get("snapname").cloned().unwrap_or_default();
                let g = self.guest_mut(&node, kind, vmid)?;
                Self::unlocked(g)?;
                if g.snapshots.contains_key(&name) {
                    return Err(fail(500, format!("snapshot name '{name}' already used")));
                }
                g.lock = Some("snapshot".into());
                let task = if kind == "lxc" { "vzsnapshot" } else { "qmsnapshot" };
                Ok(self.start_task(&node, task, &vmid.to_string(), Effect::Snapshot { vmid, name }, failure))
            }
            ("DELETE", "/nodes/{node}/{kind}/{vmid}/snapshot/{snapname}")
            | ("POST", "/nodes/{node}/{kind}/{vmid}/snapshot/{snapname}/rollback") => {
                let name = p.get("snapname").cloned().unwrap_or_default();
                let g = self.guest_mut(&node, kind, vmid)?;
                Self::unlocked(g)?;
                if !g.snapshots.contains_key(&name) {
                    return Err(fail(500, format!("snapshot '{name}' does not exist")));
                }
                let rollback = method == "POST";
                g.lock = Some(if rollback { "rollback" } else { "snapshot-delete" }.into());
                let prefix = if kind == "lxc" { "vz" } else { "qm" };
                let (task, effect) = if rollback {
                    let start = p.get("start").is_some_and(|v| v == "1");
                    (format!("{prefix}rollback"), Effect::Rollback { vmid, name, start })
                } else {
                    (format!("{prefix}delsnapshot"), Effect::DeleteSnapshot { vmid, name })
                };
                Ok(self.start_task(&node, &task, &vmid.to_string(), effect, failure))
            }
            _ => Err(fail(501, format!("Method '{method} {template}' not implemented"))),
        }
    }
}
