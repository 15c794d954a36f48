//! The spec a guest's current config says: the inverse of `desired`, for
//! `export`. Pure. Everything the spec can express is taken over, so that
//! planning the exported spec against the same guest changes nothing but the
//! ownership marks; what it cannot express is named, never silently dropped.

use std::collections::BTreeMap;

use super::plan::{ObservedConfig, ObservedFirewall};
use crate::{
    api::{
        CloudInit, Direction, Disk, FirewallAction, FirewallRule, FirewallSpec, GuestType, HostPci, LxcDevice, LxcFeatures, Mount, Nic,
        NicModel, PowerState, ProxmoxGuestSpec, SecretKeyRef, Startup, UsbDevice,
    },
    providers::pve::{
        codec::{PropertyString, parse_size_bytes, pve_urldecode},
        split_tags,
    },
    reconcile::ownership::{is_mark_tag, strip_mark_lines},
};

/// A guest as Proxmox reports it, for export.
pub struct GuestFacts<'a> {
    pub cluster: &'a str,
    pub vmid: u32,
    pub node: &'a str,
    pub guest_type: GuestType,
    pub running: bool,
    pub pool: Option<String>,
    pub config: &'a ObservedConfig,
    pub firewall: Option<&'a ObservedFirewall>,
    /// The Secret a cloud-init password becomes a reference to.
    pub password_secret: String,
}

/// The exported spec, what it cannot say, and the Secrets it refers to.
pub struct Exported {
    pub spec: ProxmoxGuestSpec,
    /// Config keys (or parts of them) the spec has no field for, with why.
    pub unexpressed: Vec<String>,
    /// `name/key` of each Secret the user must create (a cloud-init password).
    pub secrets: Vec<String>,
}

/// Keys PVE keeps for itself or that describe the guest's history, not its wanted state.
const NOT_STATE: &[&str] = &["digest", "meta", "vmgenid", "smbios1", "lock", "parent", "snaptime", "arch"];

pub fn spec_of(f: &GuestFacts) -> Exported {
    let cfg = |k: &str| f.config.effective(k);
    let mut out = Exported {
        spec: base_spec(f),
        unexpressed: vec![],
        secrets: vec![],
    };
    let mut used: Vec<String> = vec![
        "name".into(),
        "hostname".into(),
        "description".into(),
        "tags".into(),
        "onboot".into(),
    ];
    used.extend(
        [
            "protection",
            "startup",
            "cores",
            "sockets",
            "cpu",
            "memory",
            "balloon",
            "swap",
            "agent",
        ]
        .map(String::from),
    );
    let spec = &mut out.spec;
    spec.name = cfg(if f.guest_type == GuestType::Qemu { "name" } else { "hostname" })
        .unwrap_or_default()
        .to_string();
    spec.description = cfg("description").map(strip_mark_lines).filter(|d| !d.trim().is_empty());
    spec.tags = split_tags(cfg("tags").unwrap_or(""))
        .into_iter()
        .filter(|t| !is_mark_tag(t))
        .collect();
    spec.start_on_boot = cfg("onboot") == Some("1");
    spec.protection = cfg("protection") == Some("1");
    spec.startup = cfg("startup").map(startup);
    spec.cpu.cores = number(cfg("cores")).unwrap_or(1);
    spec.cpu.sockets = number(cfg("sockets")).unwrap_or(1);
    spec.memory_mib = cfg("memory")
        .and_then(|m| PropertyString::parse(m, "current").get("current").and_then(|v| v.parse().ok()))
        .unwrap_or(512);
    match f.guest_type {
        GuestType::Qemu => qemu(f, &mut out, &mut used),
        GuestType::Lxc => lxc(f, &mut out, &mut used),
    }
    out.spec.network = nics(f, &mut used);
    out.spec.firewall = f.firewall.and_then(firewall_of);
    for key in f.config.keys() {
        let family = key.trim_end_matches(|c: char| c.is_ascii_digit());
        // A container's ostype comes from its template; a VM's is the user's choice.
        let derived = f.guest_type == GuestType::Lxc && key == "ostype";
        let known = used.iter().any(|u| u == key) || NOT_STATE.contains(&key) || NOT_STATE.contains(&family) || derived;
        if !known && cfg(key).is_some() {
            out.unexpressed.push(format!("{key}: {}", cfg(key).unwrap_or_default()));
        }
    }
    out
}

/// The spec's required fields, and what an adopted guest always says.
fn base_spec(f: &GuestFacts) -> ProxmoxGuestSpec {
    // A placeholder source: an adopted guest with a VMID is never created from it.
    let source = match f.guest_type {
        GuestType::Qemu => serde_json::json!({"iso": {"image": "local:iso/adopted.iso"}}),
        GuestType::Lxc => serde_json::json!({"osTemplate": "local:vztmpl/adopted.tar.zst"}),
    };
    let mut spec: ProxmoxGuestSpec = serde_json::from_value(serde_json::json!({
        "type": f.guest_type.as_str(), "memoryMiB": 512, "source": source,
    }))
    .expect("a minimal spec");
    spec.cluster = f.cluster.to_string();
    spec.vmid = Some(f.vmid);
    spec.node = Some(f.node.to_string());
    spec.adopt = true;
    spec.pool = f.pool.clone();
    spec.power = if f.running { PowerState::Running } else { PowerState::Stopped };
    spec
}

/// `key` is `family` and a number (`usb0`, `dev12`).
fn slot_of(key: &str, family: &str) -> bool {
    key.strip_prefix(family)
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

fn number<T: std::str::FromStr>(v: Option<&str>) -> Option<T> {
    v.and_then(|v| v.trim().parse().ok())
}

fn startup(v: &str) -> Startup {
    let p = PropertyString::parse(v, "order");
    Startup {
        order: number(p.get("order")),
        up: number(p.get("up")),
        down: number(p.get("down")),
    }
}

fn qemu(f: &GuestFacts, out: &mut Exported, used: &mut Vec<String>) {
    let cfg = |k: &str| f.config.effective(k);
    let spec = &mut out.spec;
    spec.cpu.cpu_type = cfg("cpu").and_then(|c| PropertyString::parse(c, "cputype").get("cputype").map(str::to_string));
    spec.balloon_mib = number(cfg("balloon"));
    // Off (or never set, as the web UI leaves it) stays off; on is the default.
    let agent_on = cfg("agent").is_some_and(|a| PropertyString::parse(a, "enabled").get("enabled") == Some("1"));
    spec.agent = (!agent_on).then_some(false);
    for key in f.config.keys() {
        let Some(value) = cfg(key) else { continue };
        if let Some(disk) = qemu_disk(key, value) {
            match disk {
                Ok(d) => out.spec.disks.push(d),
                Err(why) => out.unexpressed.push(format!("{key}: {value} ({why})")),
            }
            used.push(key.to_string());
        } else if key.starts_with("hostpci") && key.len() > 7 {
            out.spec.host_pci.push(host_pci(key, value));
            used.push(key.to_string());
        } else if slot_of(key, "usb") {
            let p = PropertyString::parse(value, "host");
            out.spec.usb.push(UsbDevice {
                slot: key.to_string(),
                host: p.get("host").map(str::to_string),
                mapping: p.get("mapping").map(str::to_string),
                usb3: p.get("usb3") == Some("1"),
            });
            used.push(key.to_string());
        }
    }
    cloud_init(f, out, used);
}

/// A QEMU disk slot: `Ok` a disk the spec can hold, `Err` why not (a CD-ROM,
/// a cloud-init drive, EFI or TPM state are kept as they are).
fn qemu_disk(key: &str, value: &str) -> Option<Result<Disk, String>> {
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    if !matches!(base, "scsi" | "virtio" | "sata" | "ide" | "efidisk" | "tpmstate") || base.len() == key.len() {
        return None;
    }
    let p = PropertyString::parse(value, "file");
    if value.contains("cloudinit") || p.get("media") == Some("cdrom") {
        return Some(Err("kept as it is: a CD-ROM or cloud-init drive".into()));
    }
    if matches!(base, "efidisk" | "tpmstate") {
        return Some(Err("kept as it is: EFI/TPM state".into()));
    }
    Some(volume(&p).map(|(storage, size_gib)| Disk {
        slot: key.to_string(),
        storage,
        size_gib,
        ssd: p.get("ssd") == Some("1"),
        discard: p.get("discard") == Some("on"),
        iothread: p.get("iothread") == Some("1"),
        backup: p.get("backup") != Some("0"),
    }))
}

/// Storage and whole GiB of a volume (`local-lvm:vm-100-disk-0,size=32G`).
fn volume(p: &PropertyString) -> Result<(String, u32), String> {
    let file = p.get("file").or_else(|| p.get("volume")).unwrap_or_default();
    let storage = file.split_once(':').map(|(s, _)| s.to_string()).ok_or("not a storage volume")?;
    let bytes = p.get("size").and_then(parse_size_bytes).ok_or("no size")?;
    if bytes % (1 << 30) != 0 {
        return Err(format!("size {} is not whole GiB", p.get("size").unwrap_or_default()));
    }
    Ok((storage, (bytes >> 30) as u32))
}

fn host_pci(key: &str, value: &str) -> HostPci {
    let p = PropertyString::parse(value, "host");
    HostPci {
        slot: key.to_string(),
        device: match p.get("mapping") {
            Some(m) => format!("mapping={m}"),
            None => p.get("host").unwrap_or_default().to_string(),
        },
        pcie: p.get("pcie") == Some("1"),
        x_vga: p.get("x-vga") == Some("1"),
    }
}

fn cloud_init(f: &GuestFacts, out: &mut Exported, used: &mut Vec<String>) {
    let cfg = |k: &str| f.config.effective(k);
    let has_drive = f.config.keys().iter().any(|k| cfg(k).is_some_and(|v| v.contains("cloudinit")));
    // Static addresses of a VM are cloud-init's `ipconfigN`: the spec carries them only with cloudInit.
    let has_ipconfig = f.config.keys().iter().any(|k| k.starts_with("ipconfig"));
    if !has_drive && !has_ipconfig {
        return;
    }
    used.extend(["ciuser", "cipassword", "sshkeys", "nameserver", "searchdomain"].map(String::from));
    let ssh_keys = cfg("sshkeys").map(pve_urldecode).unwrap_or_default();
    let mut ci = CloudInit {
        user: cfg("ciuser").map(str::to_string),
        ssh_keys: ssh_keys
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        nameserver: cfg("nameserver").map(str::to_string),
        search_domain: cfg("searchdomain").map(str::to_string),
        password_secret_ref: None,
    };
    if cfg("cipassword").is_some() {
        // Never exported in clear: a reference to a Secret the user creates.
        ci.password_secret_ref = Some(SecretKeyRef {
            name: f.password_secret.clone(),
            key: "password".into(),
        });
        out.secrets
            .push(format!("{}/password (the cloud-init password)", f.password_secret));
    }
    out.spec.cloud_init = Some(ci);
}

fn lxc(f: &GuestFacts, out: &mut Exported, used: &mut Vec<String>) {
    let cfg = |k: &str| f.config.effective(k);
    let spec = &mut out.spec;
    spec.swap_mib = number(cfg("swap"));
    spec.unprivileged = Some(cfg("unprivileged") == Some("1"));
    spec.features = cfg("features").map(|v| {
        let p = PropertyString::parse(v, "");
        LxcFeatures {
            nesting: p.get("nesting") == Some("1"),
            keyctl: p.get("keyctl") == Some("1"),
            fuse: p.get("fuse") == Some("1"),
        }
    });
    used.extend(["unprivileged", "features"].map(String::from));
    for key in f.config.keys() {
        let Some(value) = cfg(key) else { continue };
        if key == "rootfs" {
            match volume(&PropertyString::parse(value, "volume")) {
                Ok((storage, size_gib)) => out.spec.disks.push(Disk {
                    slot: "rootfs".into(),
                    storage,
                    size_gib,
                    ssd: false,
                    discard: false,
                    iothread: false,
                    backup: true,
                }),
                Err(why) => out.unexpressed.push(format!("rootfs: {value} ({why})")),
            }
            used.push(key.to_string());
        } else if slot_of(key, "dev") {
            let p = PropertyString::parse(value, "path");
            out.spec.devices.push(LxcDevice {
                slot: key.to_string(),
                path: p.get("path").unwrap_or_default().to_string(),
                gid: number(p.get("gid")),
                uid: number(p.get("uid")),
                mode: p.get("mode").map(str::to_string),
                deny_write: p.get("deny-write") == Some("1"),
            });
            used.push(key.to_string());
        } else if slot_of(key, "mp") {
            match mount(key, value) {
                Ok(m) => out.spec.mounts.push(m),
                Err(why) => out.unexpressed.push(format!("{key}: {value} ({why})")),
            }
            used.push(key.to_string());
        }
    }
}

/// A bind mount (`/host/path,mp=/in/guest`) or a volume mount point.
fn mount(key: &str, value: &str) -> Result<Mount, String> {
    let p = PropertyString::parse(value, "volume");
    let source = p.get("volume").unwrap_or_default();
    let mut m = Mount {
        slot: key.to_string(),
        path: p.get("mp").ok_or("no mp")?.to_string(),
        host_path: None,
        storage: None,
        size_gib: None,
        read_only: p.get("ro") == Some("1"),
        backup: p.get("backup") == Some("1"),
    };
    if source.starts_with('/') {
        m.host_path = Some(source.to_string());
    } else {
        let (storage, size) = volume(&p)?;
        m.storage = Some(storage);
        m.size_gib = Some(size);
    }
    Ok(m)
}

/// Every `netN`, with its addresses (LXC: on the NIC; QEMU: in `ipconfigN`).
fn nics(f: &GuestFacts, used: &mut Vec<String>) -> Vec<Nic> {
    let cfg = |k: &str| f.config.effective(k);
    let slots: BTreeMap<u32, &str> = f
        .config
        .keys()
        .into_iter()
        .filter_map(|k| Some((k.strip_prefix("net")?.parse::<u32>().ok()?, k)))
        .collect();
    let mut out = vec![];
    for (n, key) in slots {
        let Some(value) = cfg(key) else { continue };
        used.push(key.to_string());
        let p = PropertyString::parse(value, if f.guest_type == GuestType::Qemu { "model" } else { "name" });
        let mut nic = nic(f.guest_type, key, &p);
        let addresses = match f.guest_type {
            GuestType::Lxc => Some(p),
            GuestType::Qemu => {
                used.push(format!("ipconfig{n}"));
                cfg(&format!("ipconfig{n}")).map(|c| PropertyString::parse(c, "ip"))
            }
        };
        if let Some(a) = addresses {
            nic.ipv4 = a.get("ip").map(str::to_string);
            nic.gateway4 = a.get("gw").map(str::to_string);
            nic.ipv6 = a.get("ip6").map(str::to_string);
            nic.gateway6 = a.get("gw6").map(str::to_string);
        }
        out.push(nic);
    }
    out
}

fn nic(t: GuestType, slot: &str, p: &PropertyString) -> Nic {
    const MODELS: [(&str, NicModel); 5] = [
        ("virtio", NicModel::Virtio),
        ("e1000", NicModel::E1000),
        ("e1000e", NicModel::E1000e),
        ("rtl8139", NicModel::Rtl8139),
        ("vmxnet3", NicModel::Vmxnet3),
    ];
    let qemu_model = MODELS.iter().find(|(m, _)| p.get(m).is_some() || p.get("model") == Some(m));
    Nic {
        slot: slot.to_string(),
        bridge: p.get("bridge").unwrap_or_default().to_string(),
        vlan: number(p.get("tag")),
        mtu: number(p.get("mtu")),
        model: qemu_model.map(|(_, m)| *m).filter(|_| t == GuestType::Qemu),
        name: p.get("name").map(str::to_string).filter(|_| t == GuestType::Lxc),
        mac: match t {
            GuestType::Qemu => qemu_model.and_then(|(m, _)| p.get(m)).or(p.get("macaddr")),
            GuestType::Lxc => p.get("hwaddr"),
        }
        .map(str::to_uppercase),
        firewall: p.get("firewall") == Some("1"),
        ipv4: None,
        gateway4: None,
        ipv6: None,
        gateway6: None,
    }
}

/// The guest's firewall, when it has one switched on or any rule.
pub fn firewall_of(fw: &ObservedFirewall) -> Option<FirewallSpec> {
    if !fw.options.enable && fw.rules.is_empty() {
        return None;
    }
    let action = |a: Option<&str>| match a {
        Some("ACCEPT") => Some(FirewallAction::Accept),
        Some("REJECT") => Some(FirewallAction::Reject),
        Some("DROP") => Some(FirewallAction::Drop),
        _ => None,
    };
    let mut rules: Vec<_> = fw.rules.iter().collect();
    rules.sort_by_key(|r| r.pos);
    Some(FirewallSpec {
        enabled: fw.options.enable,
        policy_in: action(fw.options.policy_in.as_deref()),
        policy_out: action(fw.options.policy_out.as_deref()),
        rules: rules
            .into_iter()
            .filter_map(|r| {
                Some(FirewallRule {
                    direction: if r.direction == "out" { Direction::Out } else { Direction::In },
                    action: action(Some(&r.action))?,
                    proto: r.proto.clone(),
                    dport: r.dport.clone(),
                    sport: r.sport.clone(),
                    source: r.source.clone(),
                    dest: r.dest.clone(),
                    comment: r.comment.clone(),
                    enabled: r.enable,
                })
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        providers::pve::FirewallRuleEntry,
        reconcile::{
            ownership::Identity,
            proxmox_guest::plan::{Action, ObservedGuest, PlanInput, plan},
        },
    };

    fn config(pairs: &[(&str, &str)]) -> ObservedConfig {
        ObservedConfig {
            current: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn facts<'a>(t: GuestType, cfg: &'a ObservedConfig, fw: Option<&'a ObservedFirewall>) -> GuestFacts<'a> {
        GuestFacts {
            cluster: "default",
            vmid: 120,
            node: "pve1",
            guest_type: t,
            running: true,
            pool: None,
            config: cfg,
            firewall: fw,
            password_secret: "web-cloud-init".into(),
        }
    }

    /// Planning the exported spec against the same guest: only the ownership marks change.
    fn only_marks_change(t: GuestType, cfg: &ObservedConfig, fw: Option<&ObservedFirewall>) -> Exported {
        let exported = spec_of(&facts(t, cfg, fw));
        let guest = ObservedGuest {
            vmid: 120,
            node: "pve1".into(),
            guest_type: t,
            running: true,
            uptime: std::time::Duration::from_secs(600),
            lock: None,
            tags: vec![],
            config: Some(cfg.clone()),
            firewall: fw.cloned(),
        };
        let id = Identity::new("homelab", "web", Some("3f1c2b4a-9d8e-4f7a-b6c5-1d2e3f4a5b6c"));
        let p = plan(&PlanInput {
            spec: &exported.spec,
            id: &id,
            guest: Some(&guest),
            foreign: None,
            vmid: Some(120),
            placement: None,
            source: None,
            ci_password: None,
            snapshot_name: None,
        });
        assert!(p.blocked.is_none() && p.pending.is_empty(), "{p:?}");
        match p.actions.as_slice() {
            [Action::MarkOwnership { params }] => {
                let mut keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
                keys.sort();
                assert_eq!(keys, vec!["description", "tags"], "{p:?}");
            }
            other => panic!("only the marks should change: {other:?}"),
        }
        exported
    }

    #[test]
    fn a_vm_made_in_the_web_ui_exports_to_a_spec_that_changes_only_the_marks() {
        let cfg = config(&[
            ("name", "web"),
            ("description", "nginx for the family photos\n"),
            ("tags", "prod;web"),
            ("onboot", "1"),
            ("startup", "order=2,up=30"),
            ("cores", "4"),
            ("sockets", "1"),
            ("cpu", "x86-64-v2-AES"),
            ("memory", "4096"),
            ("balloon", "1024"),
            ("agent", "1"),
            ("ostype", "l26"),
            ("scsihw", "virtio-scsi-single"),
            ("scsi0", "local-lvm:vm-120-disk-0,iothread=1,discard=on,ssd=1,size=32G"),
            ("virtio1", "tank:vm-120-disk-1,backup=0,size=100G"),
            ("ide2", "local:iso/debian-13.iso,media=cdrom"),
            ("ide0", "local-lvm:vm-120-cloudinit,media=cdrom"),
            ("net0", "virtio=BC:24:11:AA:BB:01,bridge=vmbr0,firewall=1,tag=20"),
            ("net1", "e1000=BC:24:11:AA:BB:02,bridge=vmbr1,mtu=9000"),
            ("ipconfig0", "ip=10.0.20.5/24,gw=10.0.20.1"),
            ("ipconfig1", "ip=dhcp"),
            ("ciuser", "admin"),
            ("cipassword", "**********"),
            ("sshkeys", "ssh-ed25519%20AAAAC3Nza%20me%40laptop%0A"),
            ("hostpci0", "mapping=gpu,pcie=1"),
            ("usb0", "host=1a86:7523"),
            ("usb1", "mapping=zigbee,usb3=1"),
            ("efidisk0", "local-lvm:vm-120-disk-2,efitype=4m,size=4M"),
            ("bios", "ovmf"),
            ("machine", "q35"),
            ("meta", "creation-qemu=9.0.2,ctime=1700000000"),
            ("vmgenid", "00000000-0000-0000-0000-000000000000"),
            ("smbios1", "uuid=00000000-0000-4000-8000-000000000120"),
        ]);
        let e = only_marks_change(GuestType::Qemu, &cfg, None);
        let s = &e.spec;
        assert_eq!(
            (s.name.as_str(), s.cpu.cores, s.memory_mib, s.balloon_mib),
            ("web", 4, 4096, Some(1024))
        );
        assert_eq!(s.tags, vec!["prod", "web"]);
        assert_eq!(s.disks.len(), 2, "the CD-ROM, cloud-init drive and EFI disk are not spec disks");
        assert_eq!(s.network[0].mac.as_deref(), Some("BC:24:11:AA:BB:01"));
        assert_eq!(s.network[0].ipv4.as_deref(), Some("10.0.20.5/24"));
        assert_eq!(s.cloud_init.as_ref().unwrap().ssh_keys, vec!["ssh-ed25519 AAAAC3Nza me@laptop"]);
        assert_eq!(s.host_pci[0].device, "mapping=gpu");
        assert_eq!(
            (s.usb[0].host.as_deref(), s.usb[1].mapping.as_deref()),
            (Some("1a86:7523"), Some("zigbee"))
        );
        // The password is a Secret reference, named in the summary; never the value.
        assert_eq!(e.secrets, vec!["web-cloud-init/password (the cloud-init password)"]);
        let unexpressed = e.unexpressed.join("\n");
        for key in ["bios: ovmf", "machine: q35", "efidisk0", "scsihw", "ide2", "ostype: l26"] {
            assert!(unexpressed.contains(key), "{key} missing from {unexpressed}");
        }
        assert!(!unexpressed.contains("vmgenid") && !unexpressed.contains("meta:"), "{unexpressed}");
    }

    #[test]
    fn a_container_with_bind_mounts_and_a_firewall_exports_to_a_spec_that_changes_only_the_marks() {
        let cfg = config(&[
            ("hostname", "jellyfin"),
            ("cores", "2"),
            ("memory", "2048"),
            ("swap", "0"),
            ("unprivileged", "1"),
            ("features", "nesting=1,keyctl=1"),
            ("rootfs", "local-lvm:subvol-120-disk-0,size=8G"),
            ("mp0", "/tank/media,mp=/media,ro=1"),
            ("mp1", "local-lvm:subvol-120-disk-1,mp=/config,backup=1,size=4G"),
            (
                "net0",
                "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:CC:DD:01,ip=10.0.0.50/24,gw=10.0.0.1,firewall=1",
            ),
            ("net1", "name=eth1,bridge=vmbr0,hwaddr=BC:24:11:CC:DD:02,ip=dhcp,tag=30"),
            ("dev0", "/dev/dri/renderD128,gid=104,mode=0666"),
            ("ostype", "debian"),
            ("arch", "amd64"),
        ]);
        let rule = |pos, dport: &str| FirewallRuleEntry {
            pos,
            direction: "in".into(),
            action: "ACCEPT".into(),
            proto: Some("tcp".into()),
            dport: Some(dport.into()),
            sport: None,
            source: None,
            dest: None,
            comment: None,
            enable: true,
        };
        let fw = ObservedFirewall {
            options: crate::providers::pve::FirewallOptions {
                enable: true,
                policy_in: Some("DROP".into()),
                policy_out: None,
            },
            rules: vec![rule(0, "8096"), rule(1, "8920")],
        };
        let e = only_marks_change(GuestType::Lxc, &cfg, Some(&fw));
        let s = &e.spec;
        assert_eq!((s.name.as_str(), s.swap_mib, s.unprivileged), ("jellyfin", Some(0), Some(true)));
        assert_eq!(s.mounts[0].host_path.as_deref(), Some("/tank/media"));
        assert_eq!((s.mounts[1].storage.as_deref(), s.mounts[1].size_gib), (Some("local-lvm"), Some(4)));
        let rules = &s.firewall.as_ref().unwrap().rules;
        assert_eq!(
            rules.iter().map(|r| r.dport.as_deref()).collect::<Vec<_>>(),
            [Some("8096"), Some("8920")]
        );
        assert_eq!((s.devices[0].path.as_str(), s.devices[0].gid), ("/dev/dri/renderD128", Some(104)));
        assert!(e.unexpressed.is_empty(), "{:?}", e.unexpressed);
    }
}
