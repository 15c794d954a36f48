//! PVE's property-string and value conventions, as the simulator needs them.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub(super) fn typed_value(kind: &str, key: &str, v: &str) -> Value {
    const QEMU_INT: &[&str] = &[
        "cores",
        "sockets",
        "balloon",
        "onboot",
        "protection",
        "numa",
        "template",
        "vcpus",
        "cpuunits",
        "acpi",
        "kvm",
        "tablet",
    ];
    const LXC_INT: &[&str] = &[
        "cores",
        "memory",
        "swap",
        "onboot",
        "protection",
        "unprivileged",
        "template",
        "cpuunits",
        "tty",
        "console",
    ];
    let ints = if kind == "lxc" { LXC_INT } else { QEMU_INT };
    match (ints.contains(&key), v.parse::<i64>()) {
        (true, Ok(n)) => json!(n),
        _ => json!(v),
    }
}

/// Keys a running guest takes at once; everything else waits in `pending` for a reboot.
pub(super) fn is_hot(kind: &str, key: &str, new_slot: bool) -> bool {
    const COMMON: &[&str] = &["name", "description", "tags", "onboot", "startup", "protection", "lock"];
    if COMMON.contains(&key) {
        return true;
    }
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    match kind {
        "qemu" => key == "balloon" || base == "net" || (new_slot && matches!(base, "scsi" | "virtio" | "sata")),
        _ => matches!(key, "memory" | "swap" | "cores" | "cpulimit" | "cpuunits") || base == "net" || (new_slot && base == "mp"),
    }
}

pub(super) fn is_disk_key(kind: &str, key: &str) -> bool {
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    match kind {
        "qemu" => matches!(base, "scsi" | "virtio" | "sata" | "ide" | "efidisk" | "tpmstate") && base.len() < key.len(),
        _ => key == "rootfs" || (base == "mp" && base.len() < key.len()),
    }
}

pub(super) fn now_epoch() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(super) fn size_string(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{}G", bytes >> 30)
    } else {
        format!("{}M", bytes >> 20)
    }
}

pub(super) fn parse_size(s: &str) -> Option<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().ok()?;
    let mul: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    Some((n * mul as f64) as u64)
}

pub(super) fn split_props(s: &str) -> Vec<(Option<String>, String)> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (Some(k.to_string()), v.to_string()),
            None => (None, p.to_string()),
        })
        .collect()
}

pub(super) fn join_props(items: &[(Option<String>, String)]) -> String {
    items
        .iter()
        .map(|(k, v)| k.as_ref().map_or(v.clone(), |k| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn prop<'a>(items: &'a [(Option<String>, String)], key: &str) -> Option<&'a str> {
    items.iter().find(|(k, _)| k.as_deref() == Some(key)).map(|(_, v)| v.as_str())
}

pub(super) const NIC_MODELS: &[&str] = &["virtio", "e1000", "e1000e", "rtl8139", "vmxnet3"];
