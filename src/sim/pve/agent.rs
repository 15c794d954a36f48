//! What the guest agent (QEMU) and the container runtime (LXC) report about a running guest.

use serde_json::{Value, json};

use super::props::*;
use super::state::*;

impl State {
    pub(super) fn guest_interfaces(&mut self, t: &str, node: &str, kind: &str, vmid: u32) -> Result<Value, SimError> {
        let delay = self.config.agent_delay;
        match t {
            "/nodes/{node}/{kind}/{vmid}/agent/network-get-interfaces" => {
                let g = self.guest_mut(node, kind, vmid)?;
                agent_answers(g, delay)?;
                let mut ifaces = vec![json!({"name": "lo", "hardware-address": "00:00:00:00:00:00",
                    "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}]})];
                for n in guest_addresses(g) {
                    let mut addrs = vec![json!({"ip-address": n.ip4, "ip-address-type": "ipv4", "prefix": 24})];
                    if let Some(ip6) = n.ip6 {
                        addrs.push(json!({"ip-address": ip6, "ip-address-type": "ipv6", "prefix": 64}));
                    }
                    ifaces.push(json!({"name": n.name, "hardware-address": n.mac, "ip-addresses": addrs}));
                }
                Ok(json!({ "result": ifaces }))
            }
            "/nodes/{node}/{kind}/{vmid}/interfaces" => {
                let g = self.guest_mut(node, kind, vmid)?;
                if !g.running {
                    return Err(fail(500, format!("CT {vmid} not running")));
                }
                let mut list = vec![json!({"name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8", "inet6": "::1/128"})];
                for n in guest_addresses(g) {
                    let mut e = json!({"name": n.name, "hwaddr": n.mac, "inet": format!("{}/24", n.ip4)});
                    if let Some(ip6) = n.ip6 {
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

/// PVE's refusals of an agent call: no agent configured, the VM stopped, the agent not up yet.
pub(super) fn agent_answers(g: &SimGuest, delay: std::time::Duration) -> Result<(), SimError> {
    if !g.get("agent").is_some_and(|a| a.starts_with('1') || a.contains("enabled=1")) {
        return Err(fail(500, "No QEMU guest agent configured"));
    }
    if !g.running {
        return Err(fail(500, format!("VM {} is not running", g.vmid)));
    }
    if !g.agent_up(delay) {
        return Err(fail(500, "QEMU guest agent is not running"));
    }
    Ok(())
}

/// A NIC as the guest sees it.
pub(super) struct SeenNic {
    pub name: String,
    pub mac: String,
    pub ip4: String,
    pub ip6: Option<String>,
}

/// The NICs a guest would bring up: one per `netN`, with the MAC from its
/// config, static addresses from the config, and a documentation address
/// (TEST-NET-1) standing in for a DHCP lease.
pub(super) fn guest_addresses(g: &SimGuest) -> Vec<SeenNic> {
    let mut out = Vec::new();
    for i in 0..32u32 {
        let Some(net) = g.get(&format!("net{i}")) else { continue };
        let items = split_props(&net);
        let mac = if g.kind == "qemu" {
            items
                .iter()
                .find(|(k, _)| k.as_deref().is_some_and(|k| NIC_MODELS.contains(&k)))
                .map(|(_, v)| v.clone())
        } else {
            prop(&items, "hwaddr").map(str::to_string)
        };
        let (ip, ip6) = if g.kind == "qemu" {
            let cfg = g.get(&format!("ipconfig{i}")).unwrap_or_default();
            let items = split_props(&cfg);
            (prop(&items, "ip").map(str::to_string), prop(&items, "ip6").map(str::to_string))
        } else {
            (prop(&items, "ip").map(str::to_string), prop(&items, "ip6").map(str::to_string))
        };
        let ip4 = match ip.as_deref() {
            Some(a) if a != "dhcp" => a.split('/').next().unwrap_or_default().to_string(),
            _ => format!("192.0.2.{}", g.vmid % 200 + 10 + i),
        };
        let ip6 = ip6
            .filter(|a| a != "dhcp" && a != "auto")
            .map(|a| a.split('/').next().unwrap_or_default().to_string());
        let name = match prop(&items, "name") {
            Some(n) => n.to_string(),
            None if g.kind == "qemu" => format!("ens{}", 18 + i),
            None => format!("eth{i}"),
        };
        out.push(SeenNic {
            name,
            // Guests report MACs in lower case.
            mac: mac.unwrap_or_default().to_lowercase(),
            ip4,
            ip6,
        });
    }
    out
}

/// A stand-in for a guest's web service, listening on `ip`: `200 ok` while
/// the simulated guest serves, 503 while it is stopped or rebooting. What a
/// monitor of the guest checks in the demo and the tests.
pub async fn stand_in_web_server(
    sim: std::sync::Arc<super::PveSim>,
    vmid: u32,
    ip: std::net::IpAddr,
) -> std::io::Result<std::net::SocketAddr> {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let sim = sim.clone();
            async move {
                match sim.serving(vmid) {
                    true => (axum::http::StatusCode::OK, "ok"),
                    false => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down"),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}
