//! Table tests of the pure guest plan.

use std::collections::BTreeMap;

use super::{
    desired,
    plan::{Action, ObservedConfig, ObservedGuest, PlanInput, PowerAction, ResolvedSource, plan},
};
use crate::{
    api::{ChangeClass, GuestType, ProxmoxGuestSpec},
    reconcile::ownership::Identity,
};

fn spec(yaml: &str) -> ProxmoxGuestSpec {
    serde_yaml_ng::from_str(yaml).expect("spec parses")
}

fn id() -> Identity {
    Identity::new("apps", "web", Some("3f1c2b4a-9d8e-4f7a-b6c5-1d2e3f4a5b6c"))
}

const LXC: &str = r#"
type: lxc
name: dns01
source: {osTemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"}
cpu: {cores: 1}
memoryMiB: 512
disks: [{slot: rootfs, storage: local-lvm, sizeGiB: 8}]
network: [{slot: net0, bridge: vmbr0, ipv4: 10.5.0.53/24, gateway4: 10.5.0.1}]
"#;

const VM: &str = r#"
type: qemu
name: web01
source: {clone: {templateVmid: 9000}}
cpu: {cores: 2}
memoryMiB: 4096
disks: [{slot: scsi0, storage: local-lvm, sizeGiB: 32, discard: true}]
network: [{slot: net0, bridge: vmbr0, vlan: 10}]
"#;

/// The config a guest has when it matches `spec` exactly (as the simulator would store it).
fn matching_config(s: &ProxmoxGuestSpec) -> BTreeMap<String, String> {
    let d = desired::desired(s, &id());
    let mut cfg = BTreeMap::new();
    for k in &d.keys {
        let v = match &k.compare {
            desired::Compare::Props { default_key, keys } => desired::merge_props(&k.value, None, default_key, keys),
            _ => k.value.clone(),
        };
        cfg.insert(k.key.clone(), v);
    }
    for disk in &d.disks {
        let mut v = format!("{}:vm-100-disk-0", disk.storage);
        for (k, val) in &disk.options {
            v.push_str(&format!(",{k}={val}"));
        }
        v.push_str(&format!(",size={}G", disk.size_gib));
        cfg.insert(disk.slot.clone(), v);
    }
    // Proxmox picked a MAC for the NIC.
    if let Some(n) = cfg.get_mut("net0") {
        *n = n.replacen("virtio", "virtio=BC:24:11:00:00:01", 1);
        if s.guest_type == GuestType::Lxc {
            n.push_str(",hwaddr=BC:24:11:00:00:02,type=veth");
        }
    }
    if s.cloud_init.is_some() {
        cfg.insert("ide0".into(), "local-lvm:vm-100-cloudinit,media=cdrom".into());
    }
    cfg
}

fn guest(s: &ProxmoxGuestSpec, running: bool, cfg: BTreeMap<String, String>) -> ObservedGuest {
    ObservedGuest {
        vmid: 100,
        node: "pve1".into(),
        guest_type: s.guest_type,
        running,
        uptime: std::time::Duration::from_secs(3600),
        lock: None,
        tags: vec![id().mark_tag()],
        config: Some(ObservedConfig {
            current: cfg,
            ..Default::default()
        }),
        firewall: None,
    }
}

fn input<'a>(s: &'a ProxmoxGuestSpec, ident: &'a Identity, g: Option<&'a ObservedGuest>) -> PlanInput<'a> {
    PlanInput {
        spec: s,
        id: ident,
        guest: g,
        foreign: None,
        vmid: None,
        placement: None,
        source: None,
        ci_password: None,
        snapshot_name: None,
    }
}

fn update_keys(p: &super::plan::Plan) -> Vec<String> {
    p.actions
        .iter()
        .flat_map(|a| match a {
            Action::UpdateConfig { params, .. } => params.iter().map(|(k, _)| k.clone()).collect(),
            _ => vec![],
        })
        .collect()
}

#[test]
fn create_lxc_sends_full_config_with_zero_one_booleans() {
    let s = spec(LXC);
    let ident = id();
    let src = ResolvedSource::OsTemplate(s.source.os_template.clone().unwrap());
    let p = plan(&PlanInput {
        vmid: Some(105),
        placement: Some("pve2"),
        source: Some(&src),
        ..input(&s, &ident, None)
    });
    let [Action::CreateGuest { node, vmid, params }] = p.actions.as_slice() else {
        panic!("{:?}", p.actions)
    };
    assert_eq!((node.as_str(), *vmid), ("pve2", 105));
    let get = |k: &str| params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str());
    assert_eq!(get("rootfs"), Some("local-lvm:8"));
    assert_eq!(get("net0"), Some("name=eth0,bridge=vmbr0,gw=10.5.0.1,ip=10.5.0.53/24"));
    assert_eq!(get("unprivileged"), Some("1"));
    assert_eq!(get("onboot"), Some("0"));
    assert!(get("tags").unwrap().contains(&ident.mark_tag()));
    assert!(get("description").unwrap().contains(&ident.mark_line()));
    assert!(params.iter().all(|(_, v)| v != "true" && v != "false"), "PVE refuses true/false");
}

#[test]
fn clone_marks_the_guest_through_its_description() {
    let s = spec(VM);
    let ident = id();
    let src = ResolvedSource::Clone {
        template_node: "pve2".into(),
        template_vmid: 9000,
    };
    let p = plan(&PlanInput {
        vmid: Some(101),
        placement: Some("pve1"),
        source: Some(&src),
        ..input(&s, &ident, None)
    });
    let [Action::CloneGuest { template_node, params, .. }] = p.actions.as_slice() else {
        panic!("{:?}", p.actions)
    };
    assert_eq!(template_node, "pve2");
    assert!(params.contains(&("target".into(), "pve1".into())));
    assert!(params.iter().any(|(k, v)| k == "description" && v.contains(&ident.mark_line())));
}

#[test]
fn matching_guest_is_a_noop() {
    for yaml in [LXC, VM] {
        let s = spec(yaml);
        let ident = id();
        let g = guest(&s, true, matching_config(&s));
        let p = plan(&input(&s, &ident, Some(&g)));
        assert!(p.is_noop(), "{yaml}: {p:?}");
    }
}

#[test]
fn steady_state_without_a_config_read_only_checks_power() {
    let s = spec(VM);
    let ident = id();
    let mut g = guest(&s, false, BTreeMap::new());
    g.config = None;
    let p = plan(&input(&s, &ident, Some(&g)));
    assert_eq!(p.actions, vec![Action::Power(PowerAction::Start)]);
}

#[test]
fn table_of_changes() {
    struct Case {
        name: &'static str,
        base: &'static str,
        running: bool,
        edit: fn(&mut BTreeMap<String, String>),
        spec_edit: fn(&mut ProxmoxGuestSpec),
        writes: &'static [&'static str],
        pending: &'static [(&'static str, ChangeClass)],
        extra: Option<Action>,
    }
    let cases = [
        Case {
            name: "hot lxc memory",
            base: LXC,
            running: true,
            edit: |_| {},
            spec_edit: |s| s.memory_mib = 1024,
            writes: &["memory"],
            pending: &[],
            extra: None,
        },
        Case {
            name: "qemu cores need a reboot (Manual)",
            base: VM,
            running: true,
            edit: |_| {},
            spec_edit: |s| s.cpu.cores = 4,
            writes: &["cores"],
            pending: &[("cores", ChangeClass::NeedsReboot)],
            extra: None,
        },
        Case {
            name: "qemu cores with RebootIfNeeded",
            base: VM,
            running: true,
            edit: |_| {},
            spec_edit: |s| {
                s.cpu.cores = 4;
                s.update_policy = crate::api::ConfigUpdatePolicy::RebootIfNeeded;
            },
            writes: &["cores"],
            pending: &[("cores", ChangeClass::NeedsReboot)],
            extra: Some(Action::Power(PowerAction::Reboot)),
        },
        Case {
            name: "stopped guest takes the change at once",
            base: VM,
            running: false,
            edit: |_| {},
            spec_edit: |s| {
                s.cpu.cores = 4;
                s.power = crate::api::PowerState::Stopped;
            },
            writes: &["cores"],
            pending: &[],
            extra: None,
        },
        Case {
            name: "already pending is not rewritten but still reported",
            base: VM,
            running: true,
            edit: |c| {
                c.insert("cores".into(), "2".into());
            },
            spec_edit: |s| s.cpu.cores = 4,
            writes: &["cores"],
            pending: &[("cores", ChangeClass::NeedsReboot)],
            extra: None,
        },
        Case {
            name: "drift in the UI is corrected, keeping the MAC",
            base: VM,
            running: true,
            edit: |c| {
                c.insert("net0".into(), "virtio=BC:24:11:00:00:01,bridge=vmbr1,tag=10".into());
            },
            spec_edit: |_| {},
            writes: &["net0"],
            pending: &[],
            extra: None,
        },
        Case {
            name: "grow disk",
            base: VM,
            running: true,
            edit: |_| {},
            spec_edit: |s| s.disks[0].size_gib = 40,
            writes: &[],
            pending: &[],
            extra: Some(Action::ResizeDisk {
                disk: "scsi0".into(),
                size_gib: 40,
            }),
        },
        Case {
            name: "power off",
            base: LXC,
            running: true,
            edit: |_| {},
            spec_edit: |s| s.power = crate::api::PowerState::Stopped,
            writes: &[],
            pending: &[],
            extra: Some(Action::Power(PowerAction::Shutdown)),
        },
        Case {
            name: "tags changed in the UI",
            base: LXC,
            running: true,
            edit: |c| {
                c.insert("tags".into(), format!("{};oops", id().mark_tag()));
            },
            spec_edit: |_| {},
            writes: &["tags"],
            pending: &[],
            extra: None,
        },
        Case {
            name: "storage change needs re-creation and is only reported",
            base: LXC,
            running: true,
            edit: |_| {},
            spec_edit: |s| s.disks[0].storage = "tank".into(),
            writes: &[],
            pending: &[("rootfs", ChangeClass::NeedsRecreate)],
            extra: None,
        },
    ];
    for c in cases {
        let base = spec(c.base);
        let mut cfg = matching_config(&base);
        (c.edit)(&mut cfg);
        let mut s = base.clone();
        (c.spec_edit)(&mut s);
        let ident = id();
        // "already pending": the new value sits in PVE's pending section.
        let mut g = guest(&s, c.running, cfg);
        if c.name.starts_with("already pending") {
            g.config.as_mut().unwrap().pending.insert("cores".into(), "4".into());
        }
        let p = plan(&input(&s, &ident, Some(&g)));
        let writes = update_keys(&p);
        let expected_writes: Vec<String> = if c.name.starts_with("already pending") {
            vec![]
        } else {
            c.writes.iter().map(|s| s.to_string()).collect()
        };
        assert_eq!(writes, expected_writes, "{}: {p:?}", c.name);
        let pending: Vec<(String, ChangeClass)> = p.pending.iter().map(|x| (x.field.clone(), x.class)).collect();
        let expected: Vec<(String, ChangeClass)> = c.pending.iter().map(|(f, k)| (f.to_string(), *k)).collect();
        assert_eq!(pending, expected, "{}", c.name);
        if let Some(a) = c.extra {
            assert!(p.actions.contains(&a), "{}: {:?}", c.name, p.actions);
        }
        if c.name.starts_with("drift") {
            let Action::UpdateConfig { params, .. } = &p.actions[0] else {
                panic!()
            };
            assert!(params[0].1.starts_with("virtio=BC:24:11:00:00:01"), "MAC kept: {}", params[0].1);
            assert!(params[0].1.contains("bridge=vmbr0"));
        }
    }
}

#[test]
fn shrink_is_refused_with_a_message() {
    let base = spec(VM);
    let cfg = matching_config(&base);
    let mut s = base.clone();
    s.disks[0].size_gib = 16;
    let ident = id();
    let g = guest(&s, true, cfg);
    let p = plan(&input(&s, &ident, Some(&g)));
    let b = p.blocked.expect("blocked");
    assert_eq!(b.reason, "DiskShrinkRefused");
    assert!(b.message.contains("set sizeGiB to at least 32"), "{}", b.message);
    assert!(p.actions.is_empty());
}

#[test]
fn foreign_guest_is_never_touched() {
    let s = spec(VM);
    let ident = id();
    let mut foreign = guest(&s, true, BTreeMap::new());
    foreign.tags = vec![];
    let p = plan(&PlanInput {
        foreign: Some(&foreign),
        vmid: Some(100),
        ..input(&s, &ident, None)
    });
    assert!(p.actions.is_empty());
    assert_eq!(p.blocked.unwrap().reason, "ForeignGuest");
}

#[test]
fn adopted_guest_gets_the_mark() {
    let mut s = spec(LXC);
    s.adopt = true;
    s.vmid = Some(100);
    let ident = id();
    let mut cfg = matching_config(&s);
    cfg.insert("tags".into(), "dns".into());
    cfg.insert("description".into(), "hand made\n".into());
    let g = guest(&s, true, cfg);
    let p = plan(&input(&s, &ident, Some(&g)));
    let Action::UpdateConfig { params, .. } = &p.actions[0] else {
        panic!("{p:?}")
    };
    assert!(params.iter().any(|(k, v)| k == "tags" && v.contains(&ident.mark_tag())));
    assert!(params.iter().any(|(k, v)| k == "description" && v.contains(&ident.mark_line())));
}

#[test]
fn observe_only_reports_without_writing() {
    let mut s = spec(LXC);
    s.mode = crate::api::ManagementMode::ObserveOnly;
    let mut cfg = matching_config(&s);
    cfg.insert("memory".into(), "2048".into());
    let ident = id();
    let g = guest(&s, true, cfg);
    let p = plan(&input(&s, &ident, Some(&g)));
    assert!(p.actions.is_empty());
    assert!(!p.pending.is_empty());
}

#[test]
fn snapshot_precedes_a_risky_change_when_asked() {
    let mut s = spec(VM);
    let cfg = matching_config(&s);
    s.disks[0].size_gib = 40;
    s.safety = Some(crate::api::Safety {
        snapshot_before_change: true,
    });
    let ident = id();
    let g = guest(&s, true, cfg);
    let p = plan(&PlanInput {
        snapshot_name: Some("hlo-g2-x"),
        ..input(&s, &ident, Some(&g))
    });
    assert_eq!(p.actions[0], Action::Snapshot { name: "hlo-g2-x".into() });
}

#[test]
fn remove_mark_keeps_the_users_tags_and_text() {
    let ident = id();
    let cfg = ObservedConfig {
        current: BTreeMap::from([
            ("tags".into(), format!("web;{}", ident.mark_tag())),
            ("description".into(), format!("hello\n{}\n", ident.mark_line())),
        ]),
        ..Default::default()
    };
    let params = super::plan::remove_mark_params(&cfg);
    assert_eq!(
        params,
        vec![
            ("tags".to_string(), "web".to_string()),
            ("description".to_string(), "hello".to_string())
        ]
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::providers::pve::codec::PropertyString;

    proptest! {
        #[test]
        fn property_strings_round_trip(items in proptest::collection::btree_map("[a-z][a-z0-9_]{0,8}", "[A-Za-z0-9:./_-]{1,12}", 0..6)) {
            let mut p = PropertyString::default();
            for (k, v) in &items {
                p.set(k, v.clone());
            }
            let parsed = PropertyString::parse(&p.encode(None), "file");
            let back: std::collections::BTreeMap<String, String> = parsed.items.into_iter().collect();
            prop_assert_eq!(back, items);
        }

        /// Whatever the spec, a guest that already matches it needs no action.
        #[test]
        fn a_matching_guest_is_always_a_noop(
            cores in 1u32..64, memory in 16u32..65536, swap in 0u32..8192, size in 1u32..2048,
            vlan in proptest::option::of(1u16..4094), mtu in proptest::option::of(576u32..9000),
            firewall: bool, on_boot: bool, protection: bool, qemu: bool, running: bool,
        ) {
            let mut s = spec(if qemu { VM } else { LXC });
            s.cpu.cores = cores;
            s.memory_mib = memory;
            if !qemu { s.swap_mib = Some(swap); }
            s.disks[0].size_gib = size;
            s.network[0].vlan = vlan;
            s.network[0].mtu = mtu;
            s.network[0].firewall = firewall;
            s.start_on_boot = on_boot;
            s.protection = protection;
            s.power = if running { crate::api::PowerState::Running } else { crate::api::PowerState::Stopped };
            let ident = id();
            let g = guest(&s, running, matching_config(&s));
            let p = plan(&input(&s, &ident, Some(&g)));
            prop_assert!(p.is_noop(), "{:?}", p);
        }
    }
}

/// Every plain key the plan compares treats a key the guest lacks as PVE's
/// default, read from PVE's published config schema (as the simulator checks
/// requests with it): a guest made without `sockets` is not "changed" to
/// `sockets=1`. A new key with a schema default and a plain compare fails here.
#[test]
fn absent_keys_compare_as_the_schemas_default() {
    let schema = crate::sim::schema::PveSchema::from_repository().expect("the schema subset");
    let rich_vm = format!("{VM}balloonMiB: 1024\nstartOnBoot: true\nprotection: true\nstartup: {{order: 2}}\n");
    let rich_ct = format!("{LXC}swapMiB: 256\nfeatures: {{nesting: true}}\n");
    for (yaml, path) in [
        (rich_vm.as_str(), "/nodes/n/qemu/100/config"),
        (rich_ct.as_str(), "/nodes/n/lxc/100/config"),
    ] {
        let method = if path.contains("qemu") { "POST" } else { "PUT" };
        let endpoint = schema
            .route(method, path)
            .unwrap_or_else(|_| panic!("{path}: no config endpoint"))
            .endpoint;
        let props = &endpoint.parameters["properties"];
        for k in desired::desired(&spec(yaml), &id()).keys {
            let family = k.key.trim_end_matches(|c: char| c.is_ascii_digit());
            let p = props.get(&k.key).or_else(|| props.get(format!("{family}[n]")));
            let default = p
                .and_then(|p| p.get("default"))
                .map(|d| d.to_string().trim_matches('"').to_string());
            match (&k.compare, default) {
                (desired::Compare::Exact, Some(d)) => panic!("{path} {}: the schema's default is {d}: compare with ExactOr", k.key),
                (desired::Compare::ExactOr(ours), d) => assert_eq!(Some(ours.to_string()), d, "{path} {}", k.key),
                (desired::Compare::Bool { default }, Some(d)) => assert_eq!(u8::from(*default).to_string(), d, "{path} {}", k.key),
                _ => {}
            }
        }
    }
}

#[test]
fn a_guest_made_without_sockets_or_swap_matches_the_defaults() {
    for yaml in [VM, LXC] {
        let s = spec(yaml);
        let mut cfg = matching_config(&s);
        for k in ["sockets", "swap"] {
            cfg.remove(k);
        }
        let g = guest(&s, true, cfg);
        let ident = id();
        assert!(update_keys(&plan(&input(&s, &ident, Some(&g)))).is_empty(), "{yaml}");
    }
}
