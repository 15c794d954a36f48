//! Guest firewall options and rules, with pve-firewall's format checks.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::state::*;

impl State {
    pub(super) fn firewall(
        &mut self,
        method: &str,
        t: &str,
        node: &str,
        kind: &str,
        vmid: u32,
        p: &BTreeMap<String, String>,
    ) -> Result<Value, SimError> {
        match (method, t) {
            ("GET", "/nodes/{node}/{kind}/{vmid}/firewall/options") => {
                let g = self.guest_mut(node, kind, vmid)?;
                let mut out = serde_json::Map::from_iter(g.fw_options.clone());
                out.insert("digest".into(), json!("0000000000000000000000000000000000000000"));
                Ok(Value::Object(out))
            }
            ("PUT", "/nodes/{node}/{kind}/{vmid}/firewall/options") => {
                let g = self.guest_mut(node, kind, vmid)?;
                for (k, v) in p {
                    if matches!(k.as_str(), "node" | "vmid" | "digest" | "delete") {
                        continue;
                    }
                    let val = if v.parse::<i64>().is_ok() && k != "policy_in" {
                        json!(v.parse::<i64>().unwrap())
                    } else {
                        json!(v)
                    };
                    g.fw_options.insert(k.clone(), val);
                }
                if let Some(list) = p.get("delete") {
                    for k in list.split(',') {
                        g.fw_options.remove(k);
                    }
                }
                Ok(Value::Null)
            }
            ("GET", "/nodes/{node}/{kind}/{vmid}/firewall/rules") => {
                let g = self.guest_mut(node, kind, vmid)?;
                Ok(Value::Array(
                    g.fw_rules
                        .iter()
                        .enumerate()
                        .map(|(i, r)| {
                            let mut r = serde_json::Map::from_iter(r.clone());
                            r.insert("pos".into(), json!(i));
                            r.insert("ipversion".into(), json!(4));
                            Value::Object(r)
                        })
                        .collect(),
                ))
            }
            ("POST", "/nodes/{node}/{kind}/{vmid}/firewall/rules") => {
                check_firewall_rule(p)?;
                let g = self.guest_mut(node, kind, vmid)?;
                let mut rule = BTreeMap::new();
                for (k, v) in p {
                    if matches!(k.as_str(), "node" | "vmid" | "digest" | "pos") {
                        continue;
                    }
                    let val = if k == "enable" || k == "log" {
                        json!(v.parse::<i64>().unwrap_or(0))
                    } else {
                        json!(v)
                    };
                    rule.insert(k.clone(), val);
                }
                // pve-firewall puts a new rule first, then moves it to `pos` when given.
                let pos = p
                    .get("pos")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0)
                    .min(g.fw_rules.len());
                g.fw_rules.insert(pos, rule);
                Ok(Value::Null)
            }
            ("DELETE", "/nodes/{node}/{kind}/{vmid}/firewall/rules/{pos}") => {
                let pos: usize = p.get("pos").and_then(|v| v.parse().ok()).unwrap_or(usize::MAX);
                let g = self.guest_mut(node, kind, vmid)?;
                if pos >= g.fw_rules.len() {
                    return Err(fail(500, format!("no rule at position {pos}")));
                }
                g.fw_rules.remove(pos);
                Ok(Value::Null)
            }
            _ => Err(fail(501, format!("Method '{method} {t}' not implemented"))),
        }
    }
}

/// pve-firewall's own format checks for a rule (`pve-fw-dport-spec`,
/// `pve-fw-addr-spec`, `pve-fw-protocol-spec`), with its error texts.
pub(super) fn check_firewall_rule(p: &BTreeMap<String, String>) -> Result<(), SimError> {
    const PROTOCOLS: &[&str] = &[
        "tcp",
        "udp",
        "udplite",
        "sctp",
        "dccp",
        "icmp",
        "ipv6-icmp",
        "igmp",
        "gre",
        "esp",
        "ah",
        "ipip",
        "ipencap",
        "ipv6",
        "ospf",
        "vrrp",
        "pim",
        "l2tp",
        "rsvp",
    ];
    let invalid = |key: &str, why: String| param_fail(key, format!("invalid format - {why}"));
    for key in ["dport", "sport"] {
        let Some(spec) = p.get(key) else { continue };
        for item in spec.split(',') {
            for port in item.split(':') {
                if port.parse::<u32>().map_or(true, |n| n > 65535) {
                    return Err(invalid(key, format!("invalid port '{port}'")));
                }
            }
        }
    }
    if let Some(proto) = p.get("proto")
        && !PROTOCOLS.contains(&proto.as_str())
        && proto.parse::<u8>().is_err()
    {
        return Err(invalid("proto", format!("unknown protocol '{proto}'")));
    }
    let alias = regex::Regex::new(r"^\+?((dc|guest)/)?[A-Za-z][A-Za-z0-9_-]+$").expect("regex");
    for key in ["source", "dest"] {
        let Some(spec) = p.get(key) else { continue };
        if alias.is_match(spec) {
            continue;
        }
        for elem in spec.split(',') {
            let ok = match elem.split_once('-') {
                Some((a, b)) => a.parse::<std::net::IpAddr>().is_ok() && b.parse::<std::net::IpAddr>().is_ok(),
                None => {
                    let (addr, len) = elem.split_once('/').unwrap_or((elem, "0"));
                    addr.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
                }
            };
            if !ok {
                return Err(invalid(key, format!("invalid IP address: Invalid chars in IP {elem}")));
            }
        }
    }
    Ok(())
}
