//! The PVE config a spec asks for, key by key, with how a change to each key
//! takes effect. Pure: no I/O.

use std::collections::BTreeMap;

use crate::{
    api::{ChangeClass, Disk, GuestType, HostPci, Mount, Nic, ProxmoxGuestSpec},
    providers::pve::codec::{PropertyString, pve_urlencode},
};

use crate::reconcile::ownership::Identity;

/// How a desired property string is compared with what the guest has.
#[derive(Clone, Debug, PartialEq)]
pub enum Compare {
    /// Plain value (trailing whitespace ignored).
    Exact,
    /// Plain value where a missing key means PVE's default (its config schema's `default`).
    ExactOr(&'static str),
    /// `;`/`,`-separated tag sets.
    TagSet,
    /// Property string: compare only these keys; keep all others (and the MAC) on rewrite.
    Props {
        default_key: &'static str,
        keys: Vec<&'static str>,
    },
    /// A boolean where a missing key means this default.
    Bool { default: bool },
}

#[derive(Clone, Debug, PartialEq)]
pub struct DesiredKey {
    pub key: String,
    pub value: String,
    pub class: ChangeClass,
    pub compare: Compare,
}

/// A disk the spec asks for: slot, storage and size (handled apart from the
/// config because size changes go through `resize`).
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredDisk {
    pub slot: String,
    pub storage: String,
    pub size_gib: u32,
    /// Options written in the disk's property string.
    pub options: Vec<(&'static str, String)>,
    /// Keys of `options` compared with the guest.
    pub managed: Vec<&'static str>,
}

pub struct Desired {
    pub keys: Vec<DesiredKey>,
    pub disks: Vec<DesiredDisk>,
    /// Keys of whole families the spec manages (`net`, `ipconfig`, `hostpci`):
    /// a slot on the guest that the spec does not list gets deleted.
    pub managed_families: Vec<&'static str>,
}

fn key(k: impl Into<String>, v: impl Into<String>, class: ChangeClass, compare: Compare) -> DesiredKey {
    DesiredKey {
        key: k.into(),
        value: v.into(),
        class,
        compare,
    }
}

fn b(v: bool) -> String {
    if v { "1" } else { "0" }.to_string()
}

/// The description the guest carries: the user's text plus our ownership line.
pub fn description(spec: &ProxmoxGuestSpec, id: &Identity) -> String {
    match spec.description.as_deref().map(str::trim_end).filter(|d| !d.is_empty()) {
        Some(d) => format!("{d}\n{}", id.mark_line()),
        None => id.mark_line(),
    }
}

pub fn tags(spec: &ProxmoxGuestSpec, id: &Identity) -> String {
    let mut t: Vec<String> = spec.tags.clone();
    t.push(id.mark_tag());
    t.sort();
    t.dedup();
    t.join(";")
}

pub fn desired(spec: &ProxmoxGuestSpec, id: &Identity) -> Desired {
    use ChangeClass::*;
    let mut keys = vec![
        key("description", description(spec, id), Hot, Compare::Exact),
        key("tags", tags(spec, id), Hot, Compare::TagSet),
        key("onboot", b(spec.start_on_boot), Hot, Compare::Bool { default: false }),
        key("protection", b(spec.protection), Hot, Compare::Bool { default: false }),
    ];
    keys.extend(spec.startup.as_ref().map(startup_key));
    let mut managed_families = vec![];
    if !spec.network.is_empty() {
        managed_families.push("net");
    }
    match spec.guest_type {
        GuestType::Qemu => qemu_keys(spec, &mut keys, &mut managed_families),
        GuestType::Lxc => lxc_keys(spec, &mut keys, &mut managed_families),
    }
    let mut disks: Vec<DesiredDisk> = spec.disks.iter().map(|d| desired_disk(spec.guest_type, d)).collect();
    disks.extend(spec.mounts.iter().filter(|m| m.host_path.is_none()).map(volume_mount));
    Desired {
        keys,
        disks,
        managed_families,
    }
}

fn props(default_key: &'static str, keys: Vec<&'static str>) -> Compare {
    Compare::Props { default_key, keys }
}

fn startup_key(s: &crate::api::Startup) -> DesiredKey {
    let mut p = PropertyString::default();
    if let Some(o) = s.order {
        p.set("order", o.to_string());
    }
    if let Some(u) = s.up {
        p.set("up", u.to_string());
    }
    if let Some(d) = s.down {
        p.set("down", d.to_string());
    }
    key(
        "startup",
        p.encode(None),
        ChangeClass::Hot,
        props("order", vec!["order", "up", "down"]),
    )
}

fn qemu_keys(spec: &ProxmoxGuestSpec, keys: &mut Vec<DesiredKey>, managed_families: &mut Vec<&'static str>) {
    use ChangeClass::*;
    keys.push(key("name", &spec.name, Hot, Compare::Exact));
    keys.push(key("cores", spec.cpu.cores.to_string(), NeedsReboot, Compare::ExactOr("1")));
    keys.push(key("sockets", spec.cpu.sockets.to_string(), NeedsReboot, Compare::ExactOr("1")));
    if let Some(t) = &spec.cpu.cpu_type {
        keys.push(key("cpu", t, NeedsReboot, props("cputype", vec!["cputype"])));
    }
    keys.push(key(
        "memory",
        spec.memory_mib.to_string(),
        NeedsReboot,
        props("current", vec!["current"]),
    ));
    if let Some(bl) = spec.balloon_mib {
        keys.push(key("balloon", bl.to_string(), Hot, Compare::Exact));
    }
    // The guest agent is how status.ips is learned: on unless the spec says off.
    let agent = if spec.agent.unwrap_or(true) { "1" } else { "0" };
    keys.push(key("agent", agent, NeedsReboot, props("enabled", vec!["enabled"])));
    for nic in &spec.network {
        keys.push(key(&nic.slot, qemu_nic(nic), Hot, nic_compare(GuestType::Qemu)));
    }
    if let Some(ci) = &spec.cloud_init {
        managed_families.push("ipconfig");
        cloud_init_keys(spec, ci, keys);
    }
    if !spec.host_pci.is_empty() {
        managed_families.push("hostpci");
    }
    for dev in &spec.host_pci {
        let compare = props("host", vec!["host", "mapping", "pcie", "x-vga"]);
        keys.push(key(&dev.slot, hostpci(dev), NeedsReboot, compare));
    }
    if !spec.usb.is_empty() {
        managed_families.push("usb");
    }
    for dev in &spec.usb {
        let mut p = PropertyString::default();
        set_opt(&mut p, "host", dev.host.clone());
        set_opt(&mut p, "mapping", dev.mapping.clone());
        if dev.usb3 {
            p.set("usb3", "1");
        }
        keys.push(key(
            &dev.slot,
            p.encode(None),
            NeedsReboot,
            props("host", vec!["host", "mapping", "usb3"]),
        ));
    }
}

fn cloud_init_keys(spec: &ProxmoxGuestSpec, ci: &crate::api::CloudInit, keys: &mut Vec<DesiredKey>) {
    use ChangeClass::*;
    for nic in &spec.network {
        let ipc = ipconfig(nic);
        if !ipc.is_empty() {
            let slot = format!("ipconfig{}", nic.slot.trim_start_matches("net"));
            keys.push(key(slot, ipc, NeedsReboot, props("ip", vec!["ip", "gw", "ip6", "gw6"])));
        }
    }
    if let Some(u) = &ci.user {
        keys.push(key("ciuser", u, NeedsReboot, Compare::Exact));
    }
    if !ci.ssh_keys.is_empty() {
        let joined: String = ci.ssh_keys.iter().map(|k| format!("{}\n", k.trim())).collect();
        keys.push(key("sshkeys", pve_urlencode(&joined), NeedsReboot, Compare::Exact));
    }
    if let Some(n) = &ci.nameserver {
        keys.push(key("nameserver", n, NeedsReboot, Compare::Exact));
    }
    if let Some(s) = &ci.search_domain {
        keys.push(key("searchdomain", s, NeedsReboot, Compare::Exact));
    }
}

fn lxc_keys(spec: &ProxmoxGuestSpec, keys: &mut Vec<DesiredKey>, managed_families: &mut Vec<&'static str>) {
    if !spec.devices.is_empty() {
        managed_families.push("dev");
    }
    use ChangeClass::*;
    keys.push(key("hostname", &spec.name, NeedsReboot, Compare::Exact));
    keys.push(key("cores", spec.cpu.cores.to_string(), Hot, Compare::Exact));
    keys.push(key("memory", spec.memory_mib.to_string(), Hot, Compare::ExactOr("512")));
    keys.push(key("swap", spec.swap_mib.unwrap_or(512).to_string(), Hot, Compare::ExactOr("512")));
    if let Some(f) = &spec.features {
        let mut p = PropertyString::default();
        for (on, name) in [(f.nesting, "nesting"), (f.keyctl, "keyctl"), (f.fuse, "fuse")] {
            if on {
                p.set(name, "1");
            }
        }
        keys.push(key(
            "features",
            p.encode(None),
            NeedsReboot,
            props("", vec!["nesting", "keyctl", "fuse"]),
        ));
    }
    for nic in &spec.network {
        keys.push(key(&nic.slot, lxc_nic(nic), Hot, nic_compare(GuestType::Lxc)));
    }
    for m in spec.mounts.iter().filter(|m| m.host_path.is_some()) {
        keys.push(key(
            &m.slot,
            bind_mount(m),
            NeedsReboot,
            props("volume", vec!["volume", "mp", "ro"]),
        ));
    }
    for d in &spec.devices {
        let mut p = PropertyString::default();
        p.set("path", &d.path);
        set_opt(&mut p, "gid", d.gid.map(|g| g.to_string()));
        set_opt(&mut p, "uid", d.uid.map(|u| u.to_string()));
        set_opt(&mut p, "mode", d.mode.clone());
        if d.deny_write {
            p.set("deny-write", "1");
        }
        let compare = props("path", vec!["path", "gid", "uid", "mode", "deny-write"]);
        keys.push(key(&d.slot, p.encode(None), NeedsReboot, compare));
    }
}

fn nic_compare(t: GuestType) -> Compare {
    match t {
        GuestType::Qemu => Compare::Props {
            default_key: "model",
            keys: vec!["model", "macaddr", "bridge", "tag", "mtu", "firewall"],
        },
        GuestType::Lxc => Compare::Props {
            default_key: "name",
            keys: vec!["name", "hwaddr", "bridge", "tag", "mtu", "firewall", "ip", "gw", "ip6", "gw6"],
        },
    }
}

/// `virtio,bridge=vmbr0,...`; the model goes in as `model` and the MAC (if
/// fixed) as `macaddr`: both are folded into PVE's `virtio=MAC` on encode.
fn qemu_nic(n: &Nic) -> String {
    let mut p = PropertyString::default();
    p.set("model", n.model.map_or("virtio", |m| m.as_str()));
    set_opt(&mut p, "macaddr", n.mac.as_ref().map(|m| m.to_uppercase()));
    p.set("bridge", &n.bridge);
    set_link(&mut p, n);
    p.encode(None)
}

fn lxc_nic(n: &Nic) -> String {
    let mut p = PropertyString::default();
    p.set(
        "name",
        n.name.clone().unwrap_or_else(|| format!("eth{}", n.slot.trim_start_matches("net"))),
    );
    p.set("bridge", &n.bridge);
    set_opt(&mut p, "hwaddr", n.mac.as_ref().map(|m| m.to_uppercase()));
    set_addresses(&mut p, n);
    set_link(&mut p, n);
    p.encode(None)
}

/// Cloud-init `ipconfigN`: the same address keys an LXC NIC carries.
fn ipconfig(n: &Nic) -> String {
    let mut p = PropertyString::default();
    set_addresses(&mut p, n);
    p.encode(None)
}

fn set_opt(p: &mut PropertyString, key: &str, value: Option<String>) {
    if let Some(v) = value {
        p.set(key, v);
    }
}

fn set_addresses(p: &mut PropertyString, n: &Nic) {
    set_opt(p, "ip", n.ipv4.clone());
    set_opt(p, "gw", n.gateway4.clone());
    set_opt(p, "ip6", n.ipv6.clone());
    set_opt(p, "gw6", n.gateway6.clone());
}

fn set_link(p: &mut PropertyString, n: &Nic) {
    set_opt(p, "tag", n.vlan.map(|t| t.to_string()));
    set_opt(p, "mtu", n.mtu.map(|m| m.to_string()));
    if n.firewall {
        p.set("firewall", "1");
    }
}

fn hostpci(d: &HostPci) -> String {
    let mut p = PropertyString::default();
    match d.device.strip_prefix("mapping=") {
        Some(m) => p.set("mapping", m),
        None => p.set("host", &d.device),
    }
    if d.pcie {
        p.set("pcie", "1");
    }
    if d.x_vga {
        p.set("x-vga", "1");
    }
    p.encode(None)
}

fn bind_mount(m: &Mount) -> String {
    let mut p = PropertyString::default();
    p.set("volume", m.host_path.clone().unwrap_or_default());
    p.set("mp", &m.path);
    if m.read_only {
        p.set("ro", "1");
    }
    p.encode(Some("volume"))
}

fn desired_disk(t: GuestType, d: &Disk) -> DesiredDisk {
    let mut options = vec![];
    let mut managed = vec![];
    match t {
        GuestType::Qemu => {
            managed.extend(["ssd", "discard", "iothread", "backup"]);
            if d.ssd {
                options.push(("ssd", "1".to_string()));
            }
            if d.discard {
                options.push(("discard", "on".to_string()));
            }
            if d.iothread {
                options.push(("iothread", "1".to_string()));
            }
            if !d.backup {
                options.push(("backup", "0".to_string()));
            }
        }
        GuestType::Lxc => {}
    }
    DesiredDisk {
        slot: d.slot.clone(),
        storage: d.storage.clone(),
        size_gib: d.size_gib,
        options,
        managed,
    }
}

fn volume_mount(m: &Mount) -> DesiredDisk {
    let mut options = vec![("mp", m.path.clone())];
    if m.read_only {
        options.push(("ro", "1".to_string()));
    }
    if m.backup {
        options.push(("backup", "1".to_string()));
    }
    DesiredDisk {
        slot: m.slot.clone(),
        storage: m.storage.clone().unwrap_or_default(),
        size_gib: m.size_gib.unwrap_or(1),
        options,
        managed: vec!["mp", "ro", "backup"],
    }
}

/// The value of a managed property-string key, with PVE's spellings folded:
/// `virtio=MAC` → model + macaddr, booleans absent = 0.
pub fn normalized_props(value: &str, default_key: &str) -> BTreeMap<String, String> {
    const MODELS: &[&str] = &["virtio", "e1000", "e1000e", "rtl8139", "vmxnet3"];
    let p = PropertyString::parse(value, default_key);
    let mut out = BTreeMap::new();
    for (k, v) in &p.items {
        if MODELS.contains(&k.as_str()) {
            out.insert("model".to_string(), k.clone());
            out.insert("macaddr".to_string(), v.to_uppercase());
        } else if k == "hwaddr" || k == "macaddr" {
            out.insert(k.clone(), v.to_uppercase());
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Render a NIC/property string for PVE, merging keys we do not manage (and the
/// MAC Proxmox picked) from what the guest has, so a rewrite never renumbers a lease.
pub fn merge_props(desired: &str, observed: Option<&str>, default_key: &'static str, managed: &[&'static str]) -> String {
    let mut want = normalized_props(desired, default_key);
    if let Some(obs) = observed {
        for (k, v) in normalized_props(obs, default_key) {
            let keep_mac = (k == "macaddr" || k == "hwaddr") && !want.contains_key(&k);
            if keep_mac || !managed.contains(&k.as_str()) {
                want.entry(k).or_insert(v);
            }
        }
    }
    // PVE spells the QEMU model as `virtio=MAC` (or bare `virtio` to get a new MAC).
    let mut out: Vec<String> = vec![];
    if let Some(model) = want.remove("model") {
        match want.remove("macaddr") {
            Some(mac) => out.push(format!("{model}={mac}")),
            None => out.push(model),
        }
    }
    if let Some(dv) = want
        .remove(default_key)
        .filter(|_| !default_key.is_empty() && default_key != "model")
    {
        out.insert(0, dv);
        if default_key != "volume" && default_key != "file" {
            // Default keys other than volumes are written explicitly for clarity.
            let v = out.remove(0);
            out.insert(0, format!("{default_key}={v}"));
        }
    }
    out.extend(want.into_iter().map(|(k, v)| format!("{k}={v}")));
    out.join(",")
}
