//! A homelab made by hand, as the web UIs leave it, for `demo --serve`: what
//! `export` is for. Nothing here carries the operator's marks.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    npm::NpmSim,
    pve::{PveSim, SimGuest},
    technitium::{SimRecord, TechnitiumSim},
};

/// VMIDs of the hand-made guests: far from those the operator allocates from 100.
pub const VMIDS: [u32; 3] = [900, 901, 902];

fn config(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// Guests, a nightly vzdump job that has run once, an NPM host and two DNS records.
pub fn seed(pve: &PveSim, npm: &NpmSim, dns: &TechnitiumSim) -> Result<(), String> {
    for g in guests() {
        pve.add_guest(g);
    }
    pve.add_backup_job(
        "backup-8e4c0f2a-77d1",
        json!({"schedule": "01:00", "storage": "local", "vmid": "900,901,902", "mode": "snapshot",
            "compress": "zstd", "notes-template": "{{guestname}}", "prune-backups": "keep-last=7",
            "enabled": 1, "comment": "Nightly, made by hand", "mailnotification": "failure"}),
    );
    pve.run_backup_job("backup-8e4c0f2a-77d1")?;
    pve.finish_tasks();
    npm.add_host(json!({
        "domain_names": ["ha.home.arpa"], "forward_scheme": "http", "forward_host": "10.0.0.60", "forward_port": 8123,
        "access_list_id": 0, "certificate_id": 0, "ssl_forced": false, "caching_enabled": false, "block_exploits": true,
        "advanced_config": "", "meta": {"letsencrypt_agree": false, "dns_challenge": false}, "allow_websocket_upgrade": true,
        "http2_support": false, "hsts_enabled": false, "enabled": true, "locations": []
    }));
    for (name, ip) in [("ha.home.arpa", "10.0.0.60"), ("pihole.home.arpa", "10.0.0.53")] {
        dns.add_record(
            "home.arpa",
            SimRecord {
                name: name.into(),
                rtype: "A".into(),
                ttl: 3600,
                comments: None,
                rdata: json!({"ipAddress": ip}),
            },
        );
    }
    Ok(())
}

/// Home Assistant (a VM with a USB dongle), Pi-hole and Jellyfin (containers,
/// one with a bind mount and the GPU's render node).
fn guests() -> Vec<SimGuest> {
    let mut ha = SimGuest::new(
        900,
        "qemu",
        "pve2",
        config(&[
            ("name", json!("homeassistant")),
            ("memory", json!(4096)),
            ("cores", json!(2)),
            ("ostype", json!("l26")),
            ("scsihw", json!("virtio-scsi-single")),
            ("scsi0", json!("local-lvm:vm-900-disk-0,iothread=1,size=32G")),
            ("net0", json!("virtio=BC:24:11:00:90:00,bridge=vmbr0")),
            ("usb0", json!("host=10c4:ea60")),
            ("onboot", json!(1)),
        ]),
        false,
    );
    let mut pihole = SimGuest::new(
        901,
        "lxc",
        "pve1",
        config(&[
            ("hostname", json!("pihole")),
            ("memory", json!(512)),
            ("swap", json!(512)),
            ("cores", json!(1)),
            ("rootfs", json!("local-lvm:subvol-901-disk-0,size=4G")),
            (
                "net0",
                json!("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:90:01,ip=10.0.0.53/24,gw=10.0.0.1"),
            ),
            ("unprivileged", json!(1)),
            ("onboot", json!(1)),
        ]),
        false,
    );
    let mut jellyfin = SimGuest::new(
        902,
        "lxc",
        "pve1",
        config(&[
            ("hostname", json!("jellyfin")),
            ("memory", json!(2048)),
            ("cores", json!(2)),
            ("rootfs", json!("local-lvm:subvol-902-disk-0,size=8G")),
            ("mp0", json!("/tank/media,mp=/media,ro=1")),
            ("dev0", json!("/dev/dri/renderD128,gid=104,mode=0660")),
            ("net0", json!("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:90:02,ip=dhcp")),
            ("unprivileged", json!(1)),
            ("features", json!("nesting=1")),
        ]),
        false,
    );
    for g in [&mut ha, &mut pihole, &mut jellyfin] {
        g.running = true;
    }
    vec![ha, pihole, jellyfin]
}
