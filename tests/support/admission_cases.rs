//! Specs the apiserver must refuse, with the words it must say: one table for
//! the local CEL evaluator (`tests/api_admission.rs`) and the real apiserver
//! (`tests/envtest.rs`), so both are held to the same answers.

pub const BASE_LXC: &str = r#"
  type: lxc
  name: dns01
  source: {osTemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"}
  memoryMiB: 512
  disks: [{slot: rootfs, storage: local-lvm, sizeGiB: 8}]
"#;

/// Who refuses a case: a CEL rule (checked locally too) or the OpenAPI schema
/// (patterns, list-map keys: only the apiserver checks them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    Cel,
    Schema,
}

/// (spec YAML, words the refusal must contain, who refuses).
pub fn refused_guests() -> Vec<(String, &'static str, By)> {
    let with = |extra: &str| format!("{BASE_LXC}{extra}");
    vec![
        (
            BASE_LXC.replace("type: lxc", "type: qemu").replace("rootfs", "scsi0"),
            "source.osTemplate is only valid with type: lxc",
            By::Cel,
        ),
        (
            with("  cloudInit: {user: debian}\n"),
            "cloudInit is only valid with type: qemu",
            By::Cel,
        ),
        (
            BASE_LXC.replace("type: lxc", "type: qemu").replace("rootfs", "scsi0").replace(
                "source: {osTemplate: \"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\"}",
                "source: {clone: {templateName: debian-13-cloud}}\n  network: [{slot: net0, bridge: vmbr0, ipv4: 10.5.0.31/24}]",
            ),
            "a VM's static addresses and gateways (network[].ipv4, ipv6, gateway4, gateway6) are set through cloud-init",
            By::Cel,
        ),
        (
            with("  hostPci: [{slot: hostpci0, device: \"01:00.0\"}]\n"),
            "hostPci is only valid with type: qemu",
            By::Cel,
        ),
        (with("  agent: false\n"), "agent is only valid with type: qemu", By::Cel),
        (
            with("  usb: [{slot: usb0, host: \"1a86:7523\"}]\n"),
            "usb is only valid with type: qemu",
            By::Cel,
        ),
        (
            BASE_LXC.replace("type: lxc", "type: qemu").replace("rootfs", "scsi0").replace(
                "source: {osTemplate: \"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\"}",
                "source: {iso: {image: \"local:iso/x.iso\"}}\n  devices: [{slot: dev0, path: /dev/dri/renderD128}]",
            ),
            "devices are only valid with type: lxc",
            By::Cel,
        ),
        (
            BASE_LXC.replace("type: lxc", "type: qemu").replace("rootfs", "scsi0").replace(
                "source: {osTemplate: \"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\"}",
                "source: {iso: {image: \"local:iso/x.iso\"}}\n  usb: [{slot: usb0, host: \"1a86:7523\", mapping: zigbee}]",
            ),
            "usb: set exactly one of host or mapping",
            By::Cel,
        ),
        (
            with("  node: pve1\n  allowedNodes: [pve2]\n"),
            "set either node or allowedNodes",
            By::Cel,
        ),
        (
            BASE_LXC.replace(
                "source: {osTemplate: \"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst\"}",
                "source: {osTemplate: \"local:vztmpl/x.tar.zst\", clone: {templateVmid: 9000}}",
            ),
            "source needs exactly one of clone, osTemplate, iso",
            By::Cel,
        ),
        (
            BASE_LXC.replace("rootfs", "mp0"),
            "an lxc guest needs a disk with slot: rootfs",
            By::Cel,
        ),
        (
            with("  network: [{slot: net0, bridge: vmbr0, ipv4: dhcp, gateway4: 10.0.0.1}]\n"),
            "gateway4 needs a static ipv4",
            By::Cel,
        ),
        (
            with("  mounts: [{slot: mp0, path: /data, hostPath: /srv, storage: tank, sizeGiB: 5}]\n"),
            "a mount needs exactly one of hostPath",
            By::Cel,
        ),
        (
            with("  firewall: {enabled: true, rules: [{direction: in, action: ACCEPT, dport: \"22\"}]}\n"),
            "ports need proto tcp or udp",
            By::Cel,
        ),
        (
            with("  network: [{slot: net0, bridge: vmbr0}, {slot: net0, bridge: vmbr1}]\n"),
            "Duplicate value",
            By::Schema,
        ),
        (
            BASE_LXC.replace(
                "disks: [{slot: rootfs, storage: local-lvm, sizeGiB: 8}]",
                "disks: [{slot: rootfs, storage: local-lvm, sizeGiB: 8}, {slot: rootfs, storage: tank, sizeGiB: 8}]",
            ),
            "Duplicate value",
            By::Schema,
        ),
        (
            with("  firewall: {enabled: true, rules: [{direction: in, action: ACCEPT, proto: tcp, dport: \"70000\"}]}\n"),
            "dport",
            By::Schema,
        ),
        (
            with("  firewall: {enabled: true, rules: [{direction: in, action: ACCEPT, source: \"not/an/ip\"}]}\n"),
            "source",
            By::Schema,
        ),
        (
            with("  firewall: {enabled: true, rules: [{direction: in, action: ACCEPT, proto: tcpx}]}\n"),
            "proto",
            By::Schema,
        ),
        (with("  name: Not_A_Name\n").replace("  name: dns01\n", ""), "name", By::Schema),
        (
            with("  monitor: {http: {url: \"http://10.0.0.5/\"}}\n"),
            "the monitor checks this guest: leave out http.url",
            By::Cel,
        ),
        (
            with("  monitor: {tcp: {port: 22}, http: {port: 80}}\n"),
            "set exactly one check: http, tcp or tls",
            By::Cel,
        ),
        (with("  monitor: {}\n"), "set exactly one check: http, tcp or tls", By::Cel),
        (
            with("  monitor: {tcp: {host: nas, port: 22}}\n"),
            "the monitor checks this guest: leave out tcp.host",
            By::Cel,
        ),
        (
            with("  monitor: {tcp: {port: 22}, intervalSeconds: 20, timeoutSeconds: 20}\n"),
            "timeoutSeconds must be below intervalSeconds",
            By::Cel,
        ),
        (
            with("  monitor: {tcp: {port: 22}, intervalSeconds: 5}\n"),
            "intervalSeconds",
            By::Schema,
        ),
        (
            with("  monitor: {tcp: {port: 22}, notify: {channels: [\"\"]}}\n"),
            "channels",
            By::Schema,
        ),
    ]
}

/// Specs that must be admitted (hidden-field combinations the rules must not trip on).
pub fn admitted_guests() -> Vec<String> {
    let with = |extra: &str| format!("{BASE_LXC}{extra}");
    vec![
        BASE_LXC.to_string(),
        BASE_LXC.replace("  name: dns01\n", ""),
        with(
            "  firewall: {enabled: true, rules: [{direction: in, action: ACCEPT, proto: tcp, dport: \"22,80:443\", source: \"10.0.0.0/24,192.168.1.5\"}]}\n",
        ),
        with(
            "  firewall: {enabled: true, rules: [{direction: in, action: DROP, source: \"+dc/blocked\"}, {direction: out, action: ACCEPT, dest: \"fd00::/64\", proto: ipv6-icmp}]}\n",
        ),
        with("  network: [{slot: net0, bridge: vmbr0, ipv4: 10.0.0.5/24, gateway4: 10.0.0.1}, {slot: net1, bridge: vmbr1, ipv4: dhcp}]\n"),
        with("  allowedNodes: [pve1, pve2]\n"),
        with("  monitor: {tcp: {port: 22}}\n"),
        with(
            "  monitor: {http: {scheme: https, port: 8443, path: /health, expectedStatus: [200]}, nic: net0, failureThreshold: 2, notify: {channels: [telegram], cooldownMinutes: 0}, maintenance: [{schedule: \"0 3 * * 0\", durationMinutes: 30}]}\n",
        ),
        with("  monitor: {tls: {port: 443, warnDays: 7}, paused: true}\n"),
    ]
}

pub const BASE_POLICY: &str = r#"
  selector: {matchLabels: {backup: nightly}}
  schedule: "02:30"
  storage: pbs1
  retention: {keepDaily: 7, keepWeekly: 4}
"#;

/// BackupPolicy specs the apiserver must refuse: (spec YAML, words, who).
pub fn refused_policies() -> Vec<(String, &'static str, By)> {
    let with = |extra: &str| format!("{BASE_POLICY}{extra}");
    vec![
        (
            BASE_POLICY.replace("  selector: {matchLabels: {backup: nightly}}\n", ""),
            "name the members: selector and/or vmids",
            By::Cel,
        ),
        (
            with("  allGuests: true\n"),
            "allGuests backs up every guest of the cluster",
            By::Cel,
        ),
        (with("  pool: homelab\n"), "pool names the members", By::Cel),
        (with("  exclude: [105]\n"), "exclude only goes with allGuests", By::Cel),
        (
            BASE_POLICY.replace(
                "  selector: {matchLabels: {backup: nightly}}\n",
                "  pool: homelab\n  allGuests: true\n",
            ),
            "allGuests backs up every guest of the cluster",
            By::Cel,
        ),
        (
            BASE_POLICY.replace("{keepDaily: 7, keepWeekly: 4}", "{keepAll: true, keepDaily: 7}"),
            "keepAll keeps every backup",
            By::Cel,
        ),
        (
            BASE_POLICY.replace("  retention: {keepDaily: 7, keepWeekly: 4}\n", "")
                + "  pbs: {endpoint: main, datastore: store1, prune: {schedule: daily}}\n",
            "pbs.prune prunes with the policy's retention",
            By::Cel,
        ),
        (with("  notesTemplate: \"two\\nlines\"\n"), "notesTemplate", By::Schema),
        (with("  pool: \"-x\"\n"), "pool", By::Schema),
        (
            BASE_POLICY.replace("{keepDaily: 7, keepWeekly: 4}", "{keepDaily: 0}"),
            "keep at least one backup",
            By::Cel,
        ),
        (
            BASE_POLICY.replace("{keepDaily: 7, keepWeekly: 4}", "{}"),
            "keep at least one backup",
            By::Cel,
        ),
        (
            with("  restoreTest: {schedule: \"0 5 * * 0\", scratchVmids: {first: 9990, last: 9900}, storage: local-lvm, node: pve1}\n"),
            "scratchVmids.first must not be above scratchVmids.last",
            By::Cel,
        ),
        (BASE_POLICY.replace("\"02:30\"", "\"every night\""), "schedule", By::Schema),
        (with("  maxAge: 26 hours\n"), "maxAge", By::Schema),
        (with("  maxAge: 0h\n"), "maxAge must be above zero", By::Cel),
        (with("  maxAge: 0d00h\n"), "maxAge must be above zero", By::Cel),
        (with("  vmids: [42]\n"), "vmids", By::Schema),
        (
            BASE_POLICY.replace("{keepDaily: 7, keepWeekly: 4}", "{keepDaily: 100001}"),
            "keepDaily",
            By::Schema,
        ),
        (
            with(
                "  restoreTest: {schedule: \"weekly on sunday\", scratchVmids: {first: 9900, last: 9990}, storage: local-lvm, node: pve1}\n",
            ),
            "schedule",
            By::Schema,
        ),
        (with("  pbs: {datastore: store1}\n"), "endpoint", By::Schema),
        (with("  mode: live\n"), "mode", By::Schema),
        (with("  notify: [\"\"]\n"), "notify", By::Schema),
    ]
}

/// BackupPolicy specs that must be admitted.
pub fn admitted_policies() -> Vec<String> {
    let with = |extra: &str| format!("{BASE_POLICY}{extra}");
    vec![
        BASE_POLICY.to_string(),
        BASE_POLICY.replace("  selector: {matchLabels: {backup: nightly}}\n", "  vmids: [100, 101, 250]\n"),
        BASE_POLICY.replace("\"02:30\"", "\"mon..fri 22:00\""),
        BASE_POLICY.replace("\"02:30\"", "\"sat 03:00\""),
        BASE_POLICY.replace("\"02:30\"", "daily"),
        BASE_POLICY.replace("{keepDaily: 7, keepWeekly: 4}", "{keepLast: 3}"),
        BASE_POLICY.replace("{keepDaily: 7, keepWeekly: 4}", "{keepAll: true}"),
        BASE_POLICY.replace("  retention: {keepDaily: 7, keepWeekly: 4}\n", ""),
        BASE_POLICY.replace(
            "  selector: {matchLabels: {backup: nightly}}\n",
            "  allGuests: true\n  exclude: [105, 9000]\n",
        ),
        BASE_POLICY.replace("  selector: {matchLabels: {backup: nightly}}\n", "  pool: homelab\n"),
        with("  notesTemplate: \"\"\n  compress: none\n"),
        with("  maxAge: 1d12h\n  mode: stop\n  compress: none\n  notify: [telegram]\n"),
        with(
            "  pbs: {endpoint: main, datastore: store1, verify: {schedule: daily, reverifyAfterDays: 30}, prune: {schedule: daily}, \
             garbageCollection: {schedule: \"sun 04:00\"}, sync: {remote: offsite, remoteStore: store2, schedule: daily}}\n",
        ),
        with("  restoreTest: {schedule: \"@weekly\", scratchVmids: {first: 9900, last: 9990}, storage: local-lvm, node: pve1}\n"),
        with(
            "  restoreTest: {schedule: \"0 5 * * 0\", scratchVmids: {first: 9900, last: 9900}, storage: local-lvm, node: pve1, start: false}\n",
        ),
    ]
}

pub const BASE_MONITOR: &str = "  http: {url: \"http://10.5.0.21/\"}\n  intervalSeconds: 30\n";

/// MonitorTarget specs the apiserver must refuse: (spec YAML, words, who).
pub fn refused_monitors() -> Vec<(String, &'static str, By)> {
    let with = |extra: &str| format!("{BASE_MONITOR}{extra}");
    vec![
        (with("  tcp: {host: 10.5.0.21, port: 22}\n"), "set exactly one check", By::Cel),
        ("  intervalSeconds: 30\n".to_string(), "set exactly one check", By::Cel),
        (
            BASE_MONITOR.replace("http://10.5.0.21/", "ftp://10.5.0.21/"),
            "url must be an http:// or https:// URL",
            By::Cel,
        ),
        ("  http: {path: /health}\n".to_string(), "http needs url, or a target", By::Cel),
        (
            with("  timeoutSeconds: 30\n"),
            "timeoutSeconds must be below intervalSeconds",
            By::Cel,
        ),
        (
            BASE_MONITOR.replace("intervalSeconds: 30", "intervalSeconds: 5"),
            "intervalSeconds",
            By::Schema,
        ),
        (with("  failureThreshold: 0\n"), "failureThreshold", By::Schema),
        ("  tcp: {host: db, port: 70000}\n".to_string(), "port", By::Schema),
        (
            with("  maintenance: [{schedule: \"sundays\", durationMinutes: 30}]\n"),
            "schedule",
            By::Schema,
        ),
        (with("  notify: {channels: [\"\"]}\n"), "channels", By::Schema),
        (with("  target: {kind: Service, name: web}\n"), "kind", By::Schema),
        (
            "  dns: {server: \"dns server\", name: web.home.arpa}\n".to_string(),
            "server",
            By::Schema,
        ),
        (
            "  dns: {server: \"10.5.0.53:dns\", name: web.home.arpa}\n".to_string(),
            "server",
            By::Schema,
        ),
    ]
}

/// MonitorTarget specs that must be admitted.
pub fn admitted_monitors() -> Vec<String> {
    vec![
        BASE_MONITOR.to_string(),
        "  target: {kind: ProxmoxGuest, name: web01, nic: net1}\n  http: {scheme: https, port: 8443, path: /health, expectedStatus: [200, 204], json: {pointer: /status, equals: ok}}\n".into(),
        "  tcp: {host: 10.5.0.30, port: 6379, send: \"PING\\r\\n\", expect: \"+PONG\"}\n".into(),
        "  dns: {server: \"10.5.0.53:53\", name: web01.home.arpa, recordType: A, expected: [10.5.0.21]}\n".into(),
        "  dns: {server: 10.5.0.53, name: old.home.arpa, rcode: NXDOMAIN}\n".into(),
        "  dns: {server: \"[fd00::53]:5353\", name: web.home.arpa}\n".into(),
        "  dns: {server: ns1.home.arpa, name: web.home.arpa}\n".into(),
        "  target: {kind: ProxyHost, name: media}\n  tls: {warnDays: 21}\n  notify: {channels: [phone, mail], cooldownMinutes: 0, notifyRecovery: false}\n  maintenance: [{schedule: \"0 3 * * 0\", durationMinutes: 30}]\n".into(),
    ]
}

/// DnsRecord specs (after `zone: home.arpa`) the apiserver must refuse: values
/// of the wrong shape for their type, every type whose value has one.
pub fn refused_records() -> Vec<(String, &'static str, By)> {
    let case = |t: &str, v: &str, words: &'static str| (format!("  name: x\n  type: {t}\n  values: [\"{v}\"]\n"), words, By::Cel);
    vec![
        case("A", "10.0.0.300", "A values must be IPv4 addresses"),
        case("AAAA", "10.0.0.1", "AAAA values must be IPv6 addresses"),
        case("CNAME", "10.0.0.5 web", "CNAME, NS and PTR values must be host names"),
        case("NS", "ns1 .home.arpa", "CNAME, NS and PTR values must be host names"),
        case("PTR", "http://web.home.arpa/", "CNAME, NS and PTR values must be host names"),
        case("MX", "mail.home.arpa", "MX values are 'PRIORITY HOST'"),
        case("MX", "10 http://mail.home.arpa", "MX values are 'PRIORITY HOST' with a host name"),
        case("SRV", "10 5 https web.home.arpa", "SRV values are 'PRIORITY WEIGHT PORT HOST'"),
        case("SRV", "10 5 443 web home.arpa", "SRV values are 'PRIORITY WEIGHT PORT HOST'"),
        case("CAA", "issue letsencrypt.org", "CAA values are 'FLAGS TAG VALUE'"),
        case("CAA", "0 is-sue letsencrypt.org", "CAA values are 'FLAGS TAG VALUE'"),
    ]
}
