//! Guests under Proxmox HA, as PVE treats them: a start, stop or shutdown
//! through the API becomes an HA state change (`hastart`/`hastop` tasks that
//! end at once), and the HA manager moves the guest a look later; deleting
//! one needs `purge`, which also removes its HA resource.

use std::{collections::BTreeMap, time::Instant};

use serde_json::{Value, json};

use super::state::{Effect, SimError, State, fail};

/// An HA resource (`vm:<vmid>`/`ct:<vmid>`) and what the HA manager is about to do.
#[derive(Clone, Debug, Default)]
pub struct HaResource {
    /// `started` or `stopped`: what the resource's state asks for.
    pub state: String,
    /// The power the HA manager brings the guest to, and from when.
    pub pending: Option<(bool, Instant)>,
}

pub(super) type HaResources = BTreeMap<u32, HaResource>;

impl State {
    pub(super) fn ha_managed(&self, vmid: u32) -> bool {
        self.ha.contains_key(&vmid)
    }

    /// `POST …/status/{start,stop,shutdown}` of an HA guest: the request is
    /// handed to the HA manager; the task ends before the guest moves.
    pub(super) fn ha_request(&mut self, node: &str, vmid: u32, action: &str, failure: Option<String>) -> Value {
        let running = action == "start";
        let task = if running { "hastart" } else { "hastop" };
        self.start_task(node, task, &vmid.to_string(), Effect::HaState { vmid, running }, failure)
    }

    /// The `hastart`/`hastop` task ended: the resource's state is set, the
    /// manager acts at its next round (the next look at the cluster).
    pub(super) fn ha_set(&mut self, vmid: u32, running: bool) {
        if let Some(r) = self.ha.get_mut(&vmid) {
            r.state = if running { "started" } else { "stopped" }.into();
            r.pending = Some((running, Instant::now() + self.config.task_duration));
        }
    }

    /// The HA manager's round: move the guests whose time has come.
    pub(super) fn ha_round(&mut self) {
        let now = Instant::now();
        let due: Vec<(u32, bool)> = self
            .ha
            .iter()
            .filter_map(|(v, r)| r.pending.filter(|(_, at)| *at <= now).map(|(run, _)| (*v, run)))
            .collect();
        for (vmid, running) in due {
            if let Some(r) = self.ha.get_mut(&vmid) {
                r.pending = None;
            }
            if let Some(g) = self.guests.get_mut(&vmid) {
                if running && !g.running {
                    g.apply_pending();
                    g.started_at = Some(now);
                }
                g.running = running;
            }
        }
    }

    /// PVE refuses to destroy an HA resource's guest unless asked to purge it.
    pub(super) fn check_ha_delete(&self, vmid: u32, purge: bool) -> Result<(), SimError> {
        match self.ha_managed(vmid) && !purge {
            true => Err(fail(
                500,
                format!("unable to remove VM {vmid} - used in HA resources and purge parameter not set."),
            )),
            false => Ok(()),
        }
    }

    /// `status/current`'s `ha` object.
    pub(super) fn ha_status(&self, vmid: u32) -> Value {
        match self.ha.get(&vmid) {
            Some(r) => json!({"managed": 1, "state": r.state}),
            None => json!({"managed": 0}),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sim::pve::{PveSimConfig, SimGuest};

    fn call(s: &mut State, method: &str, template: &str, p: &[(&str, &str)]) -> Result<Value, SimError> {
        let p: BTreeMap<String, String> = p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        s.dispatch(method, template, &p, None)
    }

    #[test]
    fn ha_guests_move_through_the_ha_manager_and_need_purge() {
        let mut s = State::new(PveSimConfig {
            task_duration: std::time::Duration::ZERO,
            ..Default::default()
        });
        let mut g = SimGuest::new(100, "qemu", "pve1", BTreeMap::new(), false);
        g.running = true;
        s.insert_guest(g);
        s.ha.insert(
            100,
            HaResource {
                state: "started".into(),
                pending: None,
            },
        );
        let at = [("node", "pve1"), ("vmid", "100")];
        let upid = call(&mut s, "POST", "/nodes/{node}/qemu/{vmid}/status/shutdown", &at).unwrap();
        assert!(upid.as_str().unwrap().contains(":hastop:100:"), "{upid}");
        s.finish_tasks();
        assert!(s.guests[&100].running, "the task ended before the HA manager acted");
        s.advance();
        assert!(!s.guests[&100].running, "then the HA manager stopped it");
        let status = call(&mut s, "GET", "/nodes/{node}/qemu/{vmid}/status/current", &at).unwrap();
        assert_eq!(status["ha"], json!({"managed": 1, "state": "stopped"}));

        let refused = call(&mut s, "DELETE", "/nodes/{node}/qemu/{vmid}", &at).unwrap_err();
        let SimError::Status(500, text) = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(text, "unable to remove VM 100 - used in HA resources and purge parameter not set.");
        call(
            &mut s,
            "DELETE",
            "/nodes/{node}/qemu/{vmid}",
            &[("node", "pve1"), ("vmid", "100"), ("purge", "1")],
        )
        .unwrap();
        s.finish_tasks();
        assert!(!s.guests.contains_key(&100) && !s.ha_managed(100));
    }
}
