//! What no single field's format catches: fields that must agree with each
//! other, and values whose shape a pattern only approximates (addresses,
//! SSH keys). Checked before anything is written, so a guest is either made
//! whole or not at all. Pure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::api::{Nic, ProxmoxGuestSpec};

/// Every problem, each naming the field and what to change (empty: consistent).
pub fn problems(spec: &ProxmoxGuestSpec) -> Vec<String> {
    let mut out = vec![];
    for (i, nic) in spec.network.iter().enumerate() {
        out.extend(ipv4_problems(&format!("spec.network[{i}]"), nic));
        out.extend(ipv6_problems(&format!("spec.network[{i}]"), nic));
    }
    if let Some(ci) = &spec.cloud_init {
        for ns in ci.nameserver.iter().flat_map(|n| n.split([' ', ','])).filter(|s| !s.is_empty()) {
            if ns.parse::<IpAddr>().is_err() {
                out.push(format!("spec.cloudInit.nameserver: {ns:?} is not an IP address"));
            }
        }
        for (i, key) in ci.ssh_keys.iter().enumerate() {
            if let Err(why) = ssh_public_key(key) {
                out.push(format!("spec.cloudInit.sshKeys[{i}]: {why}"));
            }
        }
    }
    out
}

fn cidr<A: std::str::FromStr>(s: &str, max: u8) -> Option<(A, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= max)?;
    Some((addr.parse().ok()?, prefix))
}

fn ipv4_problems(at: &str, nic: &Nic) -> Vec<String> {
    let Some(static_ip) = nic.ipv4.as_deref().filter(|v| *v != "dhcp") else {
        return vec![];
    };
    let Some((ip, prefix)) = cidr::<Ipv4Addr>(static_ip, 32) else {
        return vec![format!("{at}.ipv4 {static_ip:?} is not an IPv4 address in CIDR form (10.0.0.5/24)")];
    };
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let (host, net) = (u32::from(ip), u32::from(ip) & mask);
    let mut out = vec![];
    if prefix < 31 && (host == net || host == net | !mask) {
        out.push(format!(
            "{at}.ipv4 {static_ip} is the subnet's network or broadcast address; give the guest a host address"
        ));
    }
    if let Some(gw) = nic.gateway4.as_deref().and_then(|g| g.parse::<Ipv4Addr>().ok()) {
        if u32::from(gw) & mask != net {
            out.push(format!(
                "{at}.gateway4 {gw} is outside {}/{prefix}, the subnet of {static_ip}; put the gateway in the NIC's subnet",
                Ipv4Addr::from(net)
            ));
        } else if gw == ip {
            out.push(format!("{at}.gateway4 {gw} is the guest's own address"));
        }
    }
    out
}

fn ipv6_problems(at: &str, nic: &Nic) -> Vec<String> {
    let Some(static_ip) = nic.ipv6.as_deref().filter(|v| !matches!(*v, "dhcp" | "auto")) else {
        return vec![];
    };
    let Some((ip, prefix)) = cidr::<Ipv6Addr>(static_ip, 128) else {
        return vec![format!("{at}.ipv6 {static_ip:?} is not an IPv6 address in CIDR form (fd00::5/64)")];
    };
    let Some(gw) = nic.gateway6.as_deref() else { return vec![] };
    let Ok(gw) = gw.parse::<Ipv6Addr>() else {
        return vec![format!("{at}.gateway6 {gw:?} is not an IPv6 address")];
    };
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    // A link-local router (fe80::/10) is how most IPv6 networks announce it.
    let link_local = u128::from(gw) >> 118 == 0x3fa;
    match link_local || u128::from(gw) & mask == u128::from(ip) & mask {
        true => vec![],
        false => vec![format!(
            "{at}.gateway6 {gw} is outside {static_ip}'s prefix and not link-local; put the gateway in the NIC's prefix"
        )],
    }
}

/// An OpenSSH public key line: `TYPE BASE64 [comment]`, whose blob names the same type.
fn ssh_public_key(line: &str) -> Result<(), String> {
    use base64::Engine;
    const TYPES: [&str; 8] = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-dss",
    ];
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(data)) = (parts.next(), parts.next()) else {
        return Err("not an OpenSSH public key line (TYPE BASE64 [comment])".into());
    };
    if !TYPES.contains(&kind) {
        return Err(format!(
            "key type {kind:?} is not one OpenSSH knows (ssh-ed25519, ssh-rsa, ecdsa-sha2-…)"
        ));
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| "the key data is not base64 (copy the whole .pub line)".to_string())?;
    let named = blob
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n));
    match named == Some(kind.as_bytes()) {
        true => Ok(()),
        false => Err(format!(
            "the key data is not a {kind} key (PVE would refuse: unable to parse ssh key)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop";

    fn spec(network: &str, cloud_init: &str) -> ProxmoxGuestSpec {
        serde_yaml_ng::from_str(&format!(
            "type: qemu\nsource: {{clone: {{templateVmid: 9000}}}}\nmemoryMiB: 2048\n\
             disks: [{{slot: scsi0, storage: local-lvm, sizeGiB: 8}}]\nnetwork: [{network}]\n{cloud_init}"
        ))
        .unwrap()
    }

    #[test]
    fn consistent_specs_pass() {
        for (net, ci) in [
            ("{slot: net0, bridge: vmbr0, ipv4: 10.0.0.5/24, gateway4: 10.0.0.1}", ""),
            ("{slot: net0, bridge: vmbr0, ipv4: 10.0.0.1/31, gateway4: 10.0.0.0}", ""),
            ("{slot: net0, bridge: vmbr0, ipv4: dhcp, ipv6: auto}", ""),
            ("{slot: net0, bridge: vmbr0, ipv6: 'fd00::5/64', gateway6: 'fe80::1'}", ""),
            ("{slot: net0, bridge: vmbr0, ipv6: 'fd00::5/64', gateway6: 'fd00::1'}", ""),
            (
                "{slot: net0, bridge: vmbr0}",
                &format!("cloudInit: {{nameserver: '10.0.0.53 fd00::53', sshKeys: ['{ED25519}']}}"),
            ),
        ] {
            assert_eq!(problems(&spec(net, ci)), Vec::<String>::new(), "{net} {ci}");
        }
    }

    #[test]
    fn each_inconsistency_names_its_field() {
        for (net, ci, words) in [
            (
                "{slot: net0, bridge: vmbr0, ipv4: 10.0.0.5/24, gateway4: 10.0.1.1}",
                "",
                "spec.network[0].gateway4 10.0.1.1 is outside 10.0.0.0/24",
            ),
            (
                "{slot: net0, bridge: vmbr0, ipv4: 10.0.0.5/24, gateway4: 10.0.0.5}",
                "",
                "the guest's own address",
            ),
            ("{slot: net0, bridge: vmbr0, ipv4: 10.0.0.0/24}", "", "network or broadcast address"),
            (
                "{slot: net0, bridge: vmbr0, ipv4: 10.0.0.255/24}",
                "",
                "network or broadcast address",
            ),
            ("{slot: net0, bridge: vmbr0, ipv6: ':::1/64'}", "", "spec.network[0].ipv6"),
            (
                "{slot: net0, bridge: vmbr0, ipv6: 'fd00::5/129'}",
                "",
                "not an IPv6 address in CIDR form",
            ),
            (
                "{slot: net0, bridge: vmbr0, ipv6: 'fd00::5/64', gateway6: 'fd01::1'}",
                "",
                "gateway6 fd01::1 is outside",
            ),
            (
                "{slot: net0, bridge: vmbr0}",
                "cloudInit: {nameserver: 'dns.lan'}",
                "spec.cloudInit.nameserver: \"dns.lan\"",
            ),
            (
                "{slot: net0, bridge: vmbr0}",
                "cloudInit: {sshKeys: ['ssh-ed25519 not-base64!']}",
                "spec.cloudInit.sshKeys[0]: the key data is not base64",
            ),
            (
                "{slot: net0, bridge: vmbr0}",
                "cloudInit: {sshKeys: ['ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl']}",
                "not a ssh-rsa key",
            ),
            (
                "{slot: net0, bridge: vmbr0}",
                "cloudInit: {sshKeys: ['AAAAC3NzaC1lZDI1NTE5']}",
                "not an OpenSSH public key line",
            ),
        ] {
            let got = problems(&spec(net, ci)).join("\n");
            assert!(got.contains(words), "{net} {ci}: {got:?}");
        }
    }
}
