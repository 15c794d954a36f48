//! Every spec string the operator hands to Proxmox VE is held at admission to
//! the format PVE's own API schema gives that parameter. The test walks the
//! generated CRDs: a string field must be either mapped to the PVE parameter
//! it becomes (then the PVE schema's format, pattern or enum must have a
//! corpus here, and the CRD must refuse every bad value of it) or listed as
//! not sent to PVE, with why. A field added later without either fails here.

use std::collections::BTreeMap;

use serde_json::Value;

/// (CRD property, PVE method, PVE path, PVE parameter) of every spec string sent to PVE.
const SENT: &[(&str, &str, &str, &str)] = &[
    ("ProxmoxGuest spec.name", "POST", "/nodes/{node}/qemu/{vmid}/config", "name"),
    ("ProxmoxGuest spec.node", "POST", "/nodes/{node}/qemu/{vmid}/clone", "target"),
    (
        "ProxmoxGuest spec.allowedNodes[]",
        "POST",
        "/nodes/{node}/qemu/{vmid}/clone",
        "target",
    ),
    ("ProxmoxGuest spec.pool", "POST", "/nodes/{node}/qemu", "pool"),
    ("ProxmoxGuest spec.tags[]", "POST", "/nodes/{node}/qemu/{vmid}/config", "tags"),
    (
        "ProxmoxGuest spec.source.clone.storage",
        "POST",
        "/nodes/{node}/qemu/{vmid}/clone",
        "storage",
    ),
    ("ProxmoxGuest spec.disks[].storage", "POST", "/nodes/{node}/lxc", "storage"),
    ("ProxmoxGuest spec.mounts[].storage", "POST", "/nodes/{node}/lxc", "storage"),
    ("ProxmoxGuest spec.source.iso.osType", "POST", "/nodes/{node}/qemu", "ostype"),
    (
        "ProxmoxGuest spec.cloudInit.nameserver",
        "POST",
        "/nodes/{node}/qemu/{vmid}/config",
        "nameserver",
    ),
    // QEMU's own parameter has no format; the container's (the same setting) does.
    (
        "ProxmoxGuest spec.cloudInit.searchDomain",
        "PUT",
        "/nodes/{node}/lxc/{vmid}/config",
        "searchdomain",
    ),
    ("BackupPolicy spec.storage", "POST", "/cluster/backup", "storage"),
    ("BackupPolicy spec.pool", "POST", "/cluster/backup", "pool"),
    ("BackupPolicy spec.schedule", "POST", "/cluster/backup", "schedule"),
    ("BackupPolicy spec.restoreTest.storage", "POST", "/nodes/{node}/lxc", "storage"),
    (
        "BackupPolicy spec.restoreTest.node",
        "POST",
        "/nodes/{node}/qemu/{vmid}/clone",
        "target",
    ),
];

/// Spec strings not sent to PVE as they are (prefixes), and why.
const NOT_SENT: &[(&str, &str)] = &[
    ("ProxmoxGuest spec.cluster", "an endpoint name of the operator's config"),
    ("ProxmoxGuest spec.backup.", "a BackupPolicy's name"),
    ("ProxmoxGuest spec.updates.", "an UpdatePolicy's name"),
    ("UpdatePolicy spec.cluster", "an endpoint name of the operator's config"),
    (
        "UpdatePolicy spec.schedule",
        "the operator's own cron: runs start from the operator",
    ),
    ("UpdatePolicy spec.windows[].schedule", "the operator's own cron"),
    ("UpdatePolicy spec.mode", "the operator's"),
    ("UpdatePolicy spec.reboot", "the operator's; a reboot is a plain status/reboot call"),
    ("UpdatePolicy spec.commands.", "run inside the guest (agent exec takes any string)"),
    (
        "UpdatePolicy spec.validation.command",
        "run inside the guest (agent exec takes any string)",
    ),
    (
        "UpdatePolicy spec.keepSnapshot",
        "a duration the operator keeps; snapshot names are the operator's (pve-configid, tested)",
    ),
    ("UpdatePolicy spec.notify[]", "channel names of the operator's config"),
    ("UpdatePolicy spec.selector.", "a Kubernetes label selector"),
    (
        "UpdatePolicy spec.ssh.",
        "the operator's SSH client's settings and Secret references (containers), never sent to PVE",
    ),
    (
        "ProxmoxGuest spec.cloudInit.passwordSecretRef.",
        "a Secret reference; the password is sent",
    ),
    (
        "ProxmoxGuest spec.cloudInit.sshKeys[]",
        "parsed as OpenSSH keys before any call (consistency)",
    ),
    ("ProxmoxGuest spec.cloudInit.user", "PVE's ciuser has no format"),
    (
        "ProxmoxGuest spec.cpu.type",
        "sent as cputype of a property string; PVE lists models per version",
    ),
    ("ProxmoxGuest spec.description", "free text, shorter than PVE's 8192 by the CRD"),
    (
        "ProxmoxGuest spec.source.clone.templateName",
        "matched against the cluster's template names",
    ),
    (
        "ProxmoxGuest spec.source.iso.image",
        "a volume id, checked on the node before creating",
    ),
    (
        "ProxmoxGuest spec.source.osTemplate",
        "a volume id, checked on the node before creating",
    ),
    ("ProxmoxGuest spec.disks[].slot", "an enumerated slot pattern (scsi0…, rootfs)"),
    (
        "ProxmoxGuest spec.mounts[].",
        "mount point keys of a property string, patterned in the CRD",
    ),
    (
        "ProxmoxGuest spec.devices[].",
        "device keys of a property string, patterned in the CRD",
    ),
    (
        "ProxmoxGuest spec.hostPci[].",
        "PCI keys of a property string, patterned in the CRD",
    ),
    ("ProxmoxGuest spec.usb[].", "USB keys of a property string, patterned in the CRD"),
    (
        "ProxmoxGuest spec.network[].",
        "NIC keys of a property string, patterned in the CRD; addresses checked for consistency",
    ),
    (
        "ProxmoxGuest spec.firewall.",
        "firewall rule fields, patterned after PVE's firewall formats",
    ),
    ("ProxmoxGuest spec.monitor.", "goes to a MonitorTarget, not to PVE"),
    ("ProxmoxGuest spec.proxy.", "goes to Nginx Proxy Manager"),
    ("ProxmoxGuest spec.dns.", "goes to a DNS server"),
    ("ProxmoxGuest spec.deletionPolicy", "the operator's own enum"),
    ("ProxmoxGuest spec.mode", "the operator's own enum"),
    ("ProxmoxGuest spec.power", "the operator's own enum"),
    ("ProxmoxGuest spec.type", "the operator's own enum"),
    ("ProxmoxGuest spec.updatePolicy", "the operator's own enum"),
    ("BackupPolicy spec.cluster", "an endpoint name of the operator's config"),
    ("BackupPolicy spec.selector.", "a Kubernetes label selector"),
    ("BackupPolicy spec.notesTemplate", "free text, one line and PVE's 1024 by the CRD"),
    ("BackupPolicy spec.maxAge", "the operator's own duration"),
    ("BackupPolicy spec.adoptJobId", "matched against the cluster's job ids"),
    ("BackupPolicy spec.notify[]", "channel names of the operator's config"),
    ("BackupPolicy spec.pbs.", "goes to Proxmox Backup Server"),
    ("BackupPolicy spec.restoreTest.schedule", "the operator's own cron schedule"),
    ("BackupPolicy spec.deletionPolicy", "the operator's own enum"),
    ("BackupPolicy spec.managementMode", "the operator's own enum"),
    ("BackupPolicy spec.mode", "an enum of vzdump's modes"),
    ("BackupPolicy spec.compress", "an enum of vzdump's compressions"),
];

/// Values PVE accepts and refuses, per format (or `enum:PARAM` for an enum).
fn corpus(format: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match format {
        "dns-name" => (
            &["web01", "HomeAssistant", "web-01.home.arpa"],
            &["web_01", "-web", "web..lan", "web 01"],
        ),
        "pve-node" => (&["pve1", "node-2"], &["pve_1", "-pve", "pve 1"]),
        "pve-poolid" => (&["homelab", "lab.2"], &["my pool", "pool/x", "pool:x"]),
        "pve-storage-id" => (&["local-lvm", "tank", "nfs.backup"], &["1local", "local-", "lo cal", "local/x"]),
        "pve-tag-list" => (&["prod", "web", "k8s.node"], &["my tag", "tag;x", "tag,x"]),
        "address-list" => (&["10.0.0.53", "10.0.0.53 fd00::53"], &["dns.lan", "10.0.0.53;;x"]),
        "dns-name-list" => (&["home.arpa", "home.arpa lab.home.arpa"], &["-bad.lan", "a..b", "home_arpa"]),
        "pve-calendar-event" => (
            &["02:30", "sat 03:00", "mon..fri 22:00", "daily"],
            &["every night", "25h", "@daily"],
        ),
        "enum:ostype" => (&["l26", "win11", "other"], &["linux", "debian", "Win11"]),
        _ => return None,
    })
}

fn crd_properties(file: &str) -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds").join(file)).unwrap();
    let crd: Value = serde_yaml_ng::from_str(&text).unwrap();
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
    let mut out = BTreeMap::new();
    walk(
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"],
        &format!("{kind} spec"),
        &mut out,
    );
    out
}

fn walk(s: &Value, path: &str, out: &mut BTreeMap<String, Value>) {
    match s["type"].as_str() {
        Some("object") => {
            for (k, v) in s["properties"].as_object().into_iter().flatten() {
                walk(v, &format!("{path}.{k}"), out);
            }
        }
        Some("array") => walk(&s["items"], &format!("{path}[]"), out),
        Some("string") => {
            out.insert(path.to_string(), s.clone());
        }
        _ => {}
    }
}

/// The PVE schema's rule for a parameter: its named format, or its enum.
fn pve_rule(method: &str, path: &str, param: &str) -> Option<String> {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pve-api-subset.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let endpoint = schema["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == method && e["path"] == path)
        .unwrap_or_else(|| panic!("{method} {path} is not in the schema subset"));
    let p = &endpoint["parameters"]["properties"][param];
    assert!(!p.is_null(), "{method} {path} has no parameter {param}");
    match (&p["format"], &p["enum"]) {
        (Value::String(f), _) => Some(f.clone()),
        (_, Value::Array(_)) => Some(format!("enum:{param}")),
        _ => None,
    }
}

/// Whether the CRD property admits `value` (its pattern, as the API server anchors ours, and length).
fn admits(prop: &Value, value: &str) -> bool {
    let pattern = prop["pattern"].as_str().map(|p| regex::Regex::new(p).unwrap());
    let long = prop["maxLength"].as_u64().is_some_and(|m| value.chars().count() as u64 > m);
    let short = prop["minLength"].as_u64().is_some_and(|m| (value.chars().count() as u64) < m);
    pattern.is_none_or(|re| re.is_match(value)) && !long && !short
}

#[test]
fn every_spec_string_sent_to_pve_is_held_to_pves_format() {
    let mut props = crd_properties("homelab.dev_proxmoxguests.yaml");
    props.extend(crd_properties("homelab.dev_backuppolicies.yaml"));
    props.extend(crd_properties("homelab.dev_updatepolicies.yaml"));
    let mut unclassified = vec![];
    for path in props.keys() {
        let sent = SENT.iter().any(|(p, ..)| p == path);
        let exempt = NOT_SENT.iter().any(|(prefix, _)| path == prefix || path.starts_with(prefix));
        if !sent && !exempt {
            unclassified.push(path.clone());
        }
    }
    assert!(
        unclassified.is_empty(),
        "spec strings neither mapped to a PVE parameter nor listed as not sent: {unclassified:?}"
    );
    for (path, method, endpoint, param) in SENT {
        let prop = props.get(*path).unwrap_or_else(|| panic!("{path} is not in the CRD"));
        let Some(rule) = pve_rule(method, endpoint, param) else { continue };
        let (good, bad) = corpus(&rule).unwrap_or_else(|| panic!("{path}: PVE's {param} has format {rule}: add its corpus"));
        assert!(
            prop["pattern"].is_string() || prop["enum"].is_array(),
            "{path}: PVE's {param} is {rule}, the CRD admits anything"
        );
        for v in good {
            assert!(admits(prop, v), "{path} refuses {v:?}, which PVE's {rule} accepts");
        }
        for v in bad {
            assert!(!admits(prop, v), "{path} admits {v:?}, which PVE's {rule} refuses");
        }
    }
}

/// Named formats of the PVE schema the simulator does not check itself, and why.
const NOT_CHECKED_BY_THE_SIMULATOR: &[(&str, &str)] = &[
    (
        "pve-fw-addr-spec",
        "checked with pve-firewall's own texts in src/sim/pve/firewall.rs",
    ),
    (
        "pve-fw-dport-spec",
        "checked with pve-firewall's own texts in src/sim/pve/firewall.rs",
    ),
    (
        "pve-fw-sport-spec",
        "checked with pve-firewall's own texts in src/sim/pve/firewall.rs",
    ),
    (
        "pve-fw-protocol-spec",
        "checked with pve-firewall's own texts in src/sim/pve/firewall.rs",
    ),
    (
        "pve-fw-icmp-type-spec",
        "the operator sends no ICMP types (the CRD has no such field)",
    ),
    ("pve-priv", "ACL calls: the operator makes none"),
    ("pve-ct-timezone", "the operator sends no container timezone"),
    ("storage-pair", "migration storage maps: the operator does not migrate"),
];

/// Named formats that are property strings: the simulator checks their keys
/// where the schema publishes them (`format` objects); these names it gives
/// without the keys, so the operator's own writers are unit-tested instead.
const PROPERTY_STRING_FORMATS: &[&str] = &[
    "backup-fleecing",
    "backup-performance",
    "prune-backups",
    "pve-hotplug-features",
    "pve-lxc-dev-string",
    "pve-lxc-mp-string",
    "pve-qemu-sev-fmt",
    "pve-qemu-tdx-fmt",
    "pve-qm-boot",
    "pve-qm-bootdisk",
    "pve-qm-cicustom",
    "pve-qm-hostpci",
    "pve-qm-ide",
    "pve-qm-rng",
    "pve-qm-smbios1",
    "pve-qm-watchdog",
    "pve-vm-cpu-conf",
];

fn named_formats(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(f)) = map.get("format") {
                out.insert(f.trim_end_matches("-list").trim_end_matches("-opt").to_string());
            }
            map.values().for_each(|x| named_formats(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| named_formats(x, out)),
        _ => {}
    }
}

#[test]
fn every_named_format_of_the_calls_is_checked_by_the_simulator_or_says_why() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let subset: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("tests/data/pve-api-subset.json")).unwrap()).unwrap();
    let mut names = std::collections::BTreeSet::new();
    named_formats(&subset, &mut names);
    let checked = homelab_operator::sim::schema::NAMED_FORMATS;
    let unaccounted: Vec<&String> = names
        .iter()
        .filter(|n| !checked.contains(&n.as_str()))
        .filter(|n| !NOT_CHECKED_BY_THE_SIMULATOR.iter().any(|(f, _)| f == n))
        .filter(|n| !PROPERTY_STRING_FORMATS.contains(&n.as_str()))
        .collect();
    assert!(
        unaccounted.is_empty(),
        "named formats the simulator neither checks nor explains: {unaccounted:?}"
    );
    // Each checked format refuses what PVE refuses and takes what it takes.
    let corpus: &[(&str, &[&str], &[&str])] = &[
        ("CIDR", &["10.0.0.0/24", "fd00::/64"], &["10.0.0.0", "10.0.0.0/x"]),
        ("pve-iface", &["eth0", "vmbr0.10", "bond0:1"], &["0eth", "e", "eth 0"]),
        ("pve-ipv4-config", &["dhcp", "manual", "10.0.0.5/24"], &["10.0.0.5", "auto"]),
        ("pve-ipv6-config", &["auto", "fd00::5/64"], &["fd00::5"]),
        ("lxc-ip-with-ll-iface", &["10.0.0.53", "fe80::1%eth0"], &["ns1.home.arpa"]),
        (
            "pve-volume-id",
            &["local:vztmpl/debian.tar.zst", "tank:vm-100-disk-0"],
            &["debian.tar.zst", ":x"],
        ),
        (
            "pve-calendar-event",
            &["02:30", "sat 03:00", "mon..fri 22:00", "*/15", "hourly"],
            &["at noon", ""],
        ),
        ("pve-day-of-week", &["mon", "sun"], &["monday"]),
        ("email", &["ops@home.arpa"], &["ops", "ops@home"]),
        ("email-or-username", &["root@pam", "ops@home.arpa", "root"], &["a b@c"]),
        ("address", &["10.0.0.1", "fd00::1"], &["10.0.0.1/24", "web"]),
        ("pve-cpuset", &["0-3,6"], &["0-"]),
        ("pve-storage-content", &["images", "backup"], &["disk"]),
        ("mac-prefix", &["BC:24:11"], &["BD:24:11"]),
    ];
    for (format, good, bad) in corpus {
        assert!(checked.contains(format), "{format} is not checked");
        for v in *good {
            assert!(
                homelab_operator::sim::schema::check_named_format(format, v).is_ok(),
                "{format}: {v:?} refused"
            );
        }
        for v in *bad {
            assert!(
                homelab_operator::sim::schema::check_named_format(format, v).is_err(),
                "{format}: {v:?} taken"
            );
        }
    }
}
