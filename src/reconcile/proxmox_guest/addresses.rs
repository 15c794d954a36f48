//! Which address belongs to which NIC: the guest's interfaces (agent or LXC
//! runtime) matched to the config's `netN` slots by MAC. Pure.

use super::{desired::normalized_props, plan::ObservedConfig};
use crate::{api::GuestInterface, providers::pve::GuestNic};

/// `(slot, MAC)` of every NIC in the config, in slot order (`net0`, `net1`, …).
pub fn nic_macs(cfg: &ObservedConfig) -> Vec<(String, String)> {
    let mut slots: Vec<(u32, String, String)> = cfg
        .keys()
        .into_iter()
        .filter_map(|k| Some((k.strip_prefix("net")?.parse::<u32>().ok()?, k)))
        .filter_map(|(n, k)| {
            let props = normalized_props(cfg.effective(k)?, "model");
            let mac = props.get("macaddr").or_else(|| props.get("hwaddr"))?.clone();
            Some((n, k.to_string(), mac))
        })
        .collect();
    slots.sort();
    slots.into_iter().map(|(_, k, m)| (k, m)).collect()
}

/// The config's NICs with the addresses the guest reports on the interface
/// with the same MAC (none yet when the guest has not brought it up).
pub fn interfaces(cfg: &ObservedConfig, nics: &[GuestNic]) -> Vec<GuestInterface> {
    nic_macs(cfg)
        .into_iter()
        .map(|(slot, mac)| GuestInterface {
            ips: nics
                .iter()
                .filter(|n| n.mac.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(&mac)))
                .flat_map(|n| n.ips.iter().cloned())
                .collect(),
            slot,
            mac: Some(mac),
        })
        .collect()
}

/// A stand-in config holding only the NIC MACs recorded in status.
pub fn config_from(recorded: &[GuestInterface]) -> ObservedConfig {
    ObservedConfig {
        current: recorded
            .iter()
            .filter_map(|i| Some((i.slot.clone(), format!("hwaddr={}", i.mac.as_deref()?))))
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entries: &[(&str, &str)]) -> ObservedConfig {
        ObservedConfig {
            current: entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn nic(name: &str, mac: &str, ips: &[&str]) -> GuestNic {
        GuestNic {
            name: name.into(),
            mac: Some(mac.into()),
            ips: ips.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn addresses_follow_the_mac_not_the_interface_order() {
        let c = cfg(&[
            ("net0", "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:0A,ip=dhcp"),
            ("net1", "name=eth1,bridge=vmbr1,hwaddr=BC:24:11:00:00:0B,ip=10.10.0.5/24"),
        ]);
        // The guest lists the storage NIC first and in lower case.
        let seen = [
            nic("eth1", "bc:24:11:00:00:0b", &["10.10.0.5"]),
            nic("eth0", "BC:24:11:00:00:0A", &["192.168.1.20"]),
        ];
        let ifs = interfaces(&c, &seen);
        assert_eq!(ifs.iter().map(|i| i.slot.as_str()).collect::<Vec<_>>(), ["net0", "net1"]);
        assert_eq!(ifs[0].ips, ["192.168.1.20"]);
        assert_eq!(ifs[1].ips, ["10.10.0.5"]);
    }

    #[test]
    fn qemu_macs_come_from_the_model_key_and_slots_sort_numerically() {
        let c = cfg(&[
            ("net10", "virtio=BC:24:11:00:00:10,bridge=vmbr0"),
            ("net2", "e1000=BC:24:11:00:00:02,bridge=vmbr0"),
        ]);
        assert_eq!(
            nic_macs(&c),
            [
                ("net2".to_string(), "BC:24:11:00:00:02".to_string()),
                ("net10".to_string(), "BC:24:11:00:00:10".to_string())
            ]
        );
        // A NIC the guest has not brought up yet is listed without addresses.
        assert!(interfaces(&c, &[]).iter().all(|i| i.ips.is_empty()));
    }
}
