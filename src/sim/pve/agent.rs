//! What the guest agent (QEMU) and the container runtime (LXC) report about a running guest.

use serde_json::{Value, json};

use super::props::*;
use super::state::*;

impl State {
    pub(super) fn guest_interfaces(&mut self, t: &str, node: &str, kind: &str, vmid: u32) -> Result<Value, SimError> {
        match t {
            "/nodes/{node}/{kind}/{vmid}/agent/network-get-interfaces" => {
                let g = self.guest_mut(node, kind, vmid)?;
                if !g.get("agent").is_some_and(|a| a.starts_with('1') || a.contains("enabled=1")) {
                    return Err(fail(500, "No QEMU guest agent configured"));
                }
                if !g.running {
                    return Err(fail(500, format!("VM {vmid} is not running")));
                }
                let mut ifaces = vec![json!({"name": "lo", "hardware-address": "00:00:00:00:00:00",
                    "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}]})];
                for (i, (ip4, ip6)) in guest_addresses(g).into_iter().enumerate() {
                    let mut addrs = vec![json!({"ip-address": ip4, "ip-address-type": "ipv4", "prefix": 24})];
                    if let Some(ip6) = ip6 {
                        addrs.push(json!({"ip-address": ip6, "ip-address-type": "ipv6", "prefix": 64}));
                    }
                    ifaces.push(json!({"name": format!("eth{i}"), "hardware-address": "bc:24:11:00:00:01", "ip-addresses": addrs}));
                }
                Ok(json!({ "result": ifaces }))
            }
            "/nodes/{node}/{kind}/{vmid}/interfaces" => {
                let g = self.guest_mut(node, kind, vmid)?;
                if !g.running {
                    return Err(fail(500, format!("CT {vmid} not running")));
                }
                let mut list = vec![json!({"name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8", "inet6": "::1/128"})];
                for (i, (ip4, ip6)) in guest_addresses(g).into_iter().enumerate() {
                    let mut e = json!({"name": format!("eth{i}"), "hwaddr": "bc:24:11:00:00:02", "inet": format!("{ip4}/24")});
                    if let Some(ip6) = ip6 {
                        e["inet6"] = json!(format!("{ip6}/64"));
                    }
                    list.push(e);
                }
                Ok(Value::Array(list))
            }
            _ => Err(fail(501, format!("Method 'GET {t}' not implemented"))),
        }
    }
}

/// Addresses a guest would get: static ones from its config, a documentation
/// address (TEST-NET-1) standing in for a DHCP lease.
pub(super) fn guest_addresses(g: &SimGuest) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for i in 0..8 {
        let (ip, ip6) = if g.kind == "qemu" {
            let Some(cfg) = g.get(&format!("ipconfig{i}")) else {
                if i == 0 && g.get("net0").is_some() {
                    out.push((format!("192.0.2.{}", g.vmid % 200 + 10), None));
                }
                continue;
            };
            let items = split_props(&cfg);
            (prop(&items, "ip").map(str::to_string), prop(&items, "ip6").map(str::to_string))
        } else {
            let Some(net) = g.get(&format!("net{i}")) else {
                continue;
            };
            let items = split_props(&net);
            (prop(&items, "ip").map(str::to_string), prop(&items, "ip6").map(str::to_string))
        };
        let v4 = match ip.as_deref() {
            Some(a) if a != "dhcp" => a.split('/').next().unwrap_or_default().to_string(),
            _ => format!("192.0.2.{}", g.vmid % 200 + 10 + i),
        };
        let v6 = ip6
            .filter(|a| a != "dhcp" && a != "auto")
            .map(|a| a.split('/').next().unwrap_or_default().to_string());
        out.push((v4, v6));
    }
    out
}
