//! desired spec + observed guest → ordered actions. Pure: no I/O, so every
//! decision is a table test away.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    api::{ChangeClass, ConfigUpdatePolicy, GuestType, ManagementMode, PendingChange, PowerState, ProxmoxGuestSpec},
    providers::pve::{FirewallOptions, FirewallRuleEntry, Params, codec::PropertyString, split_tags},
};

use super::desired::{Compare, DesiredKey, desired, merge_props, normalized_props};
pub use crate::reconcile::Blocked;
use crate::reconcile::ownership::Identity;

/// A guest's config as PVE reports it through `.../pending`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedConfig {
    pub current: BTreeMap<String, String>,
    pub pending: BTreeMap<String, String>,
    pub pending_delete: BTreeSet<String>,
}

impl ObservedConfig {
    /// The value the guest will have after its next reboot.
    pub fn effective(&self, key: &str) -> Option<&str> {
        if self.pending_delete.contains(key) {
            return None;
        }
        self.pending.get(key).or_else(|| self.current.get(key)).map(String::as_str)
    }

    pub fn keys(&self) -> BTreeSet<&str> {
        self.current.keys().chain(self.pending.keys()).map(String::as_str).collect()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedFirewall {
    pub options: FirewallOptions,
    pub rules: Vec<FirewallRuleEntry>,
}

/// The guest as observed for this reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedGuest {
    pub vmid: u32,
    pub node: String,
    pub guest_type: GuestType,
    pub running: bool,
    /// How long it has been running (as of the cluster snapshot).
    pub uptime: std::time::Duration,
    pub lock: Option<String>,
    pub tags: Vec<String>,
    /// `None` when the config was not read this time (steady state).
    pub config: Option<ObservedConfig>,
    pub firewall: Option<ObservedFirewall>,
}

/// Where a new guest comes from, resolved against the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum ResolvedSource {
    Clone { template_node: String, template_vmid: u32 },
    OsTemplate(String),
    Iso(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    Start,
    Shutdown,
    Reboot,
    Stop,
}

impl PowerAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::Start => "start",
            PowerAction::Shutdown => "shutdown",
            PowerAction::Reboot => "reboot",
            PowerAction::Stop => "stop",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    CreateGuest {
        node: String,
        vmid: u32,
        params: Params,
    },
    CloneGuest {
        template_node: String,
        template_vmid: u32,
        vmid: u32,
        params: Params,
    },
    /// Write config keys (and delete others). `summary` names the keys for events.
    UpdateConfig {
        params: Params,
        summary: Vec<String>,
    },
    /// Add the ownership marks (tag, description line) to a guest that
    /// otherwise matches: all that adopting it writes.
    MarkOwnership {
        params: Params,
    },
    ResizeDisk {
        disk: String,
        size_gib: u32,
    },
    SetFirewallOptions {
        params: Params,
    },
    /// Delete the guest's rules (positions in descending order), then create ours in order.
    ReplaceFirewallRules {
        delete_positions: Vec<u64>,
        create: Vec<Params>,
    },
    Snapshot {
        name: String,
    },
    Power(PowerAction),
    DeleteGuest,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::CreateGuest { node, vmid, .. } => write!(f, "create guest {} on {node}", vmid_text(*vmid)),
            Action::CloneGuest { template_vmid, vmid, .. } => write!(f, "clone template {template_vmid} to {}", vmid_text(*vmid)),
            Action::UpdateConfig { summary, .. } => {
                write!(f, "update config: {}", summary.join(", "))
            }
            Action::MarkOwnership { .. } => write!(f, "adopt: add the ownership marks (tag and description line), nothing else"),
            Action::ResizeDisk { disk, size_gib } => {
                write!(f, "grow disk {disk} to {size_gib} GiB")
            }
            Action::SetFirewallOptions { .. } => write!(f, "set firewall options"),
            Action::ReplaceFirewallRules { create, .. } => {
                write!(f, "replace firewall rules ({} rules)", create.len())
            }
            Action::Snapshot { name } => write!(f, "snapshot {name}"),
            Action::Power(p) => write!(f, "{} guest", p.as_str()),
            Action::DeleteGuest => write!(f, "delete guest and its disks"),
        }
    }
}

fn vmid_text(vmid: u32) -> String {
    if vmid == 0 {
        "(VMID allocated at apply)".into()
    } else {
        vmid.to_string()
    }
}

impl Action {
    /// How a reviewer reads the change: `+` create, `-` destroy, `!` reboot, `~` change in place.
    pub fn symbol(&self) -> char {
        match self {
            Action::CreateGuest { .. } | Action::CloneGuest { .. } => '+',
            Action::DeleteGuest => '-',
            Action::Power(PowerAction::Reboot) => '!',
            Action::MarkOwnership { .. } => '=',
            _ => '~',
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Differences not (yet) applied, for `status.pendingChanges`.
    pub pending: Vec<PendingChange>,
    pub blocked: Option<Blocked>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.actions.is_empty() && self.pending.is_empty() && self.blocked.is_none()
    }
    fn block(reason: &'static str, message: String) -> Plan {
        Plan {
            blocked: Some(Blocked { reason, message }),
            ..Default::default()
        }
    }
}

pub struct PlanInput<'a> {
    pub spec: &'a ProxmoxGuestSpec,
    pub id: &'a Identity,
    /// The guest we manage (found by mark, or adopted), if it exists.
    pub guest: Option<&'a ObservedGuest>,
    /// A guest at our VMID that is not ours (and not adopted).
    pub foreign: Option<&'a ObservedGuest>,
    /// VMID to create with (spec, status or freshly allocated).
    pub vmid: Option<u32>,
    /// Node to create on.
    pub placement: Option<&'a str>,
    pub source: Option<&'a ResolvedSource>,
    /// Cloud-init password, only used when creating.
    pub ci_password: Option<&'a str>,
    /// Name for a snapshot before risky changes (`safety.snapshotBeforeChange`).
    pub snapshot_name: Option<&'a str>,
}

/// Plan what brings the guest to the spec.
pub fn plan(input: &PlanInput) -> Plan {
    let spec = input.spec;
    if spec.mode == ManagementMode::Paused {
        return Plan::default();
    }
    if let Some(f) = input.foreign {
        return Plan::block(
            "ForeignGuest",
            format!(
                "VMID {} is used by a guest the operator did not create (on {}); set adopt: true to take it over, or choose another vmid",
                f.vmid, f.node
            ),
        );
    }
    let Some(guest) = input.guest else {
        return plan_create(input);
    };
    if guest.guest_type != spec.guest_type {
        return Plan::block(
            "TypeMismatch",
            format!(
                "guest {} is {} but the spec says {}; type cannot change",
                guest.vmid,
                guest.guest_type.as_str(),
                spec.guest_type.as_str()
            ),
        );
    }
    if let Some(lock) = &guest.lock {
        // Another task (backup, migration, …) holds the guest; wait for it.
        return Plan {
            pending: vec![PendingChange {
                field: "lock".into(),
                current: Some(lock.clone()),
                desired: None,
                class: ChangeClass::Hot,
            }],
            ..Default::default()
        };
    }
    let mut plan = Plan::default();
    let mut reboot_needed = false;
    if let Some(cfg) = &guest.config {
        let diff = match diff_config(spec, input.id, cfg, guest.running) {
            Ok(d) => d,
            Err((blocked, pending)) => {
                return Plan {
                    blocked: Some(blocked),
                    pending,
                    ..Default::default()
                };
            }
        };
        let only_marks = marks_only(&diff, spec, input.id, cfg);
        plan.pending = diff.pending;
        reboot_needed = diff.reboot_needed;
        if !diff.params.is_empty() && only_marks {
            plan.actions.push(Action::MarkOwnership { params: diff.params });
        } else if !diff.params.is_empty() {
            plan.actions.push(Action::UpdateConfig {
                params: diff.params,
                summary: diff.summary,
            });
        }
        plan.actions.extend(diff.resizes);
    }
    if let (Some(fw_spec), Some(fw)) = (&spec.firewall, &guest.firewall) {
        plan.actions.extend(diff_firewall(fw_spec, fw));
    }
    power_and_safety(input, guest, reboot_needed, &mut plan);
    if spec.mode == ManagementMode::ObserveOnly {
        report_only(&mut plan);
    }
    plan
}

/// `ObserveOnly`: every difference reported as pending, nothing written.
fn report_only(plan: &mut Plan) {
    for a in plan.actions.drain(..) {
        plan.pending.push(PendingChange {
            field: a.to_string(),
            current: None,
            desired: None,
            class: ChangeClass::Hot,
        });
    }
}

/// Whether a config update writes nothing but the ownership marks.
fn marks_only(diff: &ConfigDiff, spec: &ProxmoxGuestSpec, id: &Identity, cfg: &ObservedConfig) -> bool {
    use crate::reconcile::ownership::{is_mark_tag, strip_mark_lines};
    let unmarked_tags = |v: &str| -> BTreeSet<String> { split_tags(v).into_iter().filter(|t| !is_mark_tag(t)).collect() };
    let tags_same = unmarked_tags(&super::desired::tags(spec, id)) == unmarked_tags(cfg.effective("tags").unwrap_or(""));
    let description = |v: &str| strip_mark_lines(v).trim_end().to_string();
    let description_same = description(&super::desired::description(spec, id)) == description(cfg.effective("description").unwrap_or(""));
    diff.summary.iter().all(|k| k == "tags" || k == "description") && tags_same && description_same
}

/// Power actions the spec asks for, and a safety snapshot first when a
/// risky change (a resize, a reboot) is about to run.
fn power_and_safety(input: &PlanInput, guest: &ObservedGuest, reboot_needed: bool, plan: &mut Plan) {
    let spec = input.spec;
    let risky = reboot_needed || plan.actions.iter().any(|a| matches!(a, Action::ResizeDisk { .. }));
    match (spec.power, guest.running) {
        (PowerState::Running, false) => plan.actions.push(Action::Power(PowerAction::Start)),
        (PowerState::Stopped, true) => plan.actions.push(Action::Power(PowerAction::Shutdown)),
        (PowerState::Running, true) if reboot_needed && spec.update_policy == ConfigUpdatePolicy::RebootIfNeeded => {
            plan.actions.push(Action::Power(PowerAction::Reboot));
        }
        _ => {}
    }
    if risky
        && spec.safety.as_ref().is_some_and(|s| s.snapshot_before_change)
        && plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::ResizeDisk { .. } | Action::Power(PowerAction::Reboot)))
        && let Some(name) = input.snapshot_name
    {
        plan.actions.insert(0, Action::Snapshot { name: name.to_string() });
    }
}

fn plan_create(input: &PlanInput) -> Plan {
    let spec = input.spec;
    if spec.mode != ManagementMode::Reconcile {
        return Plan {
            pending: vec![PendingChange {
                field: "guest".into(),
                current: None,
                desired: Some("created".into()),
                class: ChangeClass::Hot,
            }],
            ..Default::default()
        };
    }
    if spec.adopt && spec.vmid.is_some() {
        return Plan::block(
            "AdoptTargetMissing",
            format!("adopt: true but no guest with VMID {} exists", spec.vmid.unwrap_or_default()),
        );
    }
    let (Some(vmid), Some(node), Some(source)) = (input.vmid, input.placement, input.source) else {
        return Plan::default();
    };
    let action = match source {
        ResolvedSource::Clone {
            template_node,
            template_vmid,
        } => Action::CloneGuest {
            template_node: template_node.clone(),
            template_vmid: *template_vmid,
            vmid,
            params: clone_params(input, template_node, vmid, node),
        },
        _ => Action::CreateGuest {
            node: node.to_string(),
            vmid,
            params: create_params(input, source, vmid),
        },
    };
    Plan {
        actions: vec![action],
        ..Default::default()
    }
}

fn push(params: &mut Params, k: &str, v: impl Into<String>) {
    params.push((k.to_string(), v.into()));
}

/// A clone takes only a few parameters; the first config write brings the rest.
fn clone_params(input: &PlanInput, template_node: &str, vmid: u32, node: &str) -> Params {
    let spec = input.spec;
    let c = spec.source.clone.as_ref().expect("resolved from clone");
    let mut params: Params = vec![];
    push(&mut params, "newid", vmid.to_string());
    push(&mut params, "name", spec.name.clone());
    // Clone takes no tags: the description line marks the guest until the
    // first config write adds the tag.
    push(&mut params, "description", super::desired::description(spec, input.id));
    push(&mut params, "full", if c.full { "1" } else { "0" });
    if template_node != node {
        push(&mut params, "target", node);
    }
    if let (true, Some(st)) = (c.full, &c.storage) {
        push(&mut params, "storage", st.clone());
    }
    if let Some(pool) = &spec.pool {
        push(&mut params, "pool", pool.clone());
    }
    params
}

/// A new guest from an OS template or an ISO, created whole in one call.
fn create_params(input: &PlanInput, source: &ResolvedSource, vmid: u32) -> Params {
    let spec = input.spec;
    let mut params: Params = vec![];
    push(&mut params, "vmid", vmid.to_string());
    match source {
        ResolvedSource::OsTemplate(t) => {
            push(&mut params, "ostemplate", t.clone());
            push(
                &mut params,
                "unprivileged",
                if spec.unprivileged.unwrap_or(true) { "1" } else { "0" },
            );
        }
        ResolvedSource::Iso(image) => {
            push(&mut params, "ide2", format!("{image},media=cdrom"));
            push(&mut params, "scsihw", "virtio-scsi-single");
            let os_type = spec.source.iso.as_ref().and_then(|i| i.os_type.clone());
            push(&mut params, "ostype", os_type.unwrap_or_else(|| "l26".into()));
        }
        ResolvedSource::Clone { .. } => {}
    }
    let d = desired(spec, input.id);
    for k in &d.keys {
        let v = match &k.compare {
            Compare::Props { default_key, keys } => merge_props(&k.value, None, default_key, keys),
            _ => k.value.clone(),
        };
        params.push((k.key.clone(), v));
    }
    params.extend(d.disks.iter().map(|disk| (disk.slot.clone(), new_volume(disk))));
    if spec.guest_type == GuestType::Qemu && spec.cloud_init.is_some() {
        let storage = spec.disks.first().map_or("local-lvm".to_string(), |d| d.storage.clone());
        params.push(("ide0".into(), format!("{storage}:cloudinit")));
    }
    if let (Some(pw), GuestType::Qemu) = (input.ci_password, spec.guest_type) {
        params.push(("cipassword".into(), pw.to_string()));
    }
    if let Some(pool) = &spec.pool {
        params.push(("pool".into(), pool.clone()));
    }
    params
}

/// A disk to allocate: `STORAGE:SIZE` and its options.
fn new_volume(disk: &super::desired::DesiredDisk) -> String {
    let mut v = format!("{}:{}", disk.storage, disk.size_gib);
    for (k, val) in &disk.options {
        v.push_str(&format!(",{k}={val}"));
    }
    v
}

/// What differs between the spec and the guest's config.
#[derive(Default)]
struct ConfigDiff {
    params: Params,
    /// What the update changes, for events and `plan`.
    summary: Vec<String>,
    pending: Vec<PendingChange>,
    reboot_needed: bool,
    resizes: Vec<Action>,
    /// Slots to delete.
    deletes: Vec<String>,
}

impl ConfigDiff {
    fn set(&mut self, key: &str, value: String) {
        self.params.push((key.to_string(), value));
        self.summary.push(key.to_string());
    }

    fn delete(&mut self, key: &str) {
        self.deletes.push(key.to_string());
        self.summary.push(format!("-{key}"));
    }

    fn waits_for_reboot(&mut self, field: &str, current: Option<String>, desired: Option<String>) {
        self.reboot_needed = true;
        self.pending.push(PendingChange {
            field: field.to_string(),
            current,
            desired,
            class: ChangeClass::NeedsReboot,
        });
    }

    fn needs_recreate(&mut self, field: &str, current: String, desired: String) {
        self.pending.push(PendingChange {
            field: field.to_string(),
            current: Some(current),
            desired: Some(desired),
            class: ChangeClass::NeedsRecreate,
        });
    }
}

/// Compare every desired key with the guest's effective config; `Err` when
/// the spec asks for what is refused (a disk shrink), with what is pending.
fn diff_config(
    spec: &ProxmoxGuestSpec,
    id: &Identity,
    cfg: &ObservedConfig,
    running: bool,
) -> Result<ConfigDiff, (Blocked, Vec<PendingChange>)> {
    let d = desired(spec, id);
    let mut diff = ConfigDiff::default();
    for k in &d.keys {
        diff_key(&mut diff, k, cfg, running);
    }
    removed_slots(&mut diff, spec, &d, cfg);
    for disk in &d.disks {
        if let Err(b) = diff_disk(&mut diff, disk, cfg, running) {
            return Err((b, diff.pending));
        }
    }
    if spec.guest_type == GuestType::Lxc
        && let (Some(want), Some(have)) = (spec.unprivileged, cfg.effective("unprivileged"))
        && (have == "1") != want
    {
        diff.needs_recreate("unprivileged", have.into(), if want { "1" } else { "0" }.into());
    }
    if spec.guest_type == GuestType::Qemu
        && spec.cloud_init.is_some()
        && !cfg.keys().iter().any(|k| cfg.effective(k).is_some_and(|v| v.contains("cloudinit")))
    {
        let storage = spec.disks.first().map_or("local-lvm".to_string(), |d| d.storage.clone());
        let slot = if cfg.effective("ide0").is_none() { "ide0" } else { "ide3" };
        diff.params.push((slot.into(), format!("{storage}:cloudinit")));
        diff.summary.push(format!("{slot} (cloud-init drive)"));
    }
    if !diff.deletes.is_empty() {
        let deletes = diff.deletes.join(",");
        diff.params.push(("delete".into(), deletes));
    }
    Ok(diff)
}

fn diff_key(diff: &mut ConfigDiff, k: &DesiredKey, cfg: &ObservedConfig, running: bool) {
    let effective = cfg.effective(&k.key);
    let current = cfg
        .current
        .get(&k.key)
        .map(String::as_str)
        .filter(|_| !cfg.pending_delete.contains(&k.key));
    if !same(k, effective) {
        let value = match &k.compare {
            Compare::Props { default_key, keys } => merge_props(&k.value, effective, default_key, keys),
            _ => k.value.clone(),
        };
        diff.set(&k.key, value);
    }
    // A change that waits for a reboot (already pending, or being written now to a running guest).
    if !same(k, current) && running && k.class == ChangeClass::NeedsReboot {
        diff.waits_for_reboot(&k.key, current.map(str::to_string), Some(display_value(k)));
    }
}

/// Families the spec owns lose the slots it does not list; bind mounts are
/// ours to remove, volume mount points hold data and stay.
fn removed_slots(diff: &mut ConfigDiff, spec: &ProxmoxGuestSpec, d: &super::desired::Desired, cfg: &ObservedConfig) {
    let wanted: BTreeSet<&str> = d.keys.iter().map(|k| k.key.as_str()).collect();
    for family in &d.managed_families {
        for key in cfg.keys() {
            let is_family = key
                .strip_prefix(family)
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            if is_family && !wanted.contains(key) && cfg.effective(key).is_some() {
                diff.delete(key);
            }
        }
    }
    if spec.guest_type == GuestType::Lxc {
        for key in cfg.keys() {
            if key.starts_with("mp")
                && !wanted.contains(key)
                && !d.disks.iter().any(|x| x.slot == key)
                && cfg.effective(key).is_some_and(|v| v.starts_with('/'))
            {
                diff.delete(key);
            }
        }
    }
}

/// A disk: new (allocated), on another storage (recreate), grown, or with other options.
fn diff_disk(diff: &mut ConfigDiff, disk: &super::desired::DesiredDisk, cfg: &ObservedConfig, running: bool) -> Result<(), Blocked> {
    let Some(obs) = cfg.effective(&disk.slot) else {
        diff.set(&disk.slot, new_volume(disk));
        return Ok(());
    };
    let props = PropertyString::parse(obs, "file");
    let volume = props.get("file").unwrap_or_default().to_string();
    let storage = volume.split(':').next().unwrap_or_default();
    if storage != disk.storage {
        diff.needs_recreate(&disk.slot, storage.to_string(), disk.storage.clone());
        return Ok(());
    }
    let size = props
        .get("size")
        .and_then(crate::providers::pve::codec::parse_size_bytes)
        .unwrap_or(0);
    let want = (disk.size_gib as u64) << 30;
    if want < size {
        let message = format!(
            "disk {} is {} on the guest but the spec asks for {} GiB; disks never shrink: set sizeGiB to at least {}",
            disk.slot,
            props.get("size").unwrap_or("?"),
            disk.size_gib,
            size.div_ceil(1 << 30)
        );
        return Err(Blocked::new("DiskShrinkRefused", message));
    }
    if want > size {
        diff.resizes.push(Action::ResizeDisk {
            disk: disk.slot.clone(),
            size_gib: disk.size_gib,
        });
    }
    let obs_map = normalized_props(obs, "file");
    let differs = disk.managed.iter().any(|k| {
        let want = disk.options.iter().find(|(o, _)| o == k).map(|(_, v)| v.as_str());
        !bool_eq(want, obs_map.get(*k).map(String::as_str))
    });
    if differs {
        let mut v = volume.clone();
        for (k, val) in obs_map.iter().filter(|(k, _)| *k != "file" && !disk.managed.contains(&k.as_str())) {
            v.push_str(&format!(",{k}={val}"));
        }
        for (k, val) in &disk.options {
            v.push_str(&format!(",{k}={val}"));
        }
        diff.set(&disk.slot, v);
        if running {
            diff.waits_for_reboot(&disk.slot, Some(obs.to_string()), None);
        }
    }
    Ok(())
}

fn display_value(k: &DesiredKey) -> String {
    if k.key == "sshkeys" { "(ssh keys)".into() } else { k.value.clone() }
}

fn bool_eq(want: Option<&str>, have: Option<&str>) -> bool {
    fn norm(v: Option<&str>) -> Option<&str> {
        match v {
            None | Some("0") | Some("off") => None,
            Some("on") => Some("1"),
            Some(x) => Some(x),
        }
    }
    norm(want) == norm(have)
}

/// Is the observed value what the desired key asks for?
fn same(k: &DesiredKey, observed: Option<&str>) -> bool {
    match &k.compare {
        Compare::Exact => observed.map(str::trim_end) == Some(k.value.trim_end()),
        Compare::ExactOr(default) => observed.map_or(*default, str::trim_end) == k.value.trim_end(),
        Compare::TagSet => {
            let a: BTreeSet<String> = split_tags(&k.value).into_iter().collect();
            let b: BTreeSet<String> = split_tags(observed.unwrap_or("")).into_iter().collect();
            a == b
        }
        Compare::Bool { default } => {
            let have = observed.map(|v| v == "1").unwrap_or(*default);
            have == (k.value == "1")
        }
        Compare::Props { default_key, keys } => {
            // An absent key has every property at its default (off).
            let want = normalized_props(&k.value, default_key);
            let have = normalized_props(observed.unwrap_or(""), default_key);
            keys.iter().all(|key| {
                let w = want.get(*key).map(String::as_str);
                // A MAC the spec leaves open is whatever Proxmox picked.
                if (*key == "macaddr" || *key == "hwaddr") && w.is_none() {
                    return true;
                }
                bool_eq(w, have.get(*key).map(String::as_str))
            })
        }
    }
}

fn diff_firewall(spec: &crate::api::FirewallSpec, fw: &ObservedFirewall) -> Vec<Action> {
    let mut actions = vec![];
    let want_in = spec.policy_in.map_or("DROP", |a| a.as_str());
    let want_out = spec.policy_out.map_or("ACCEPT", |a| a.as_str());
    let o = &fw.options;
    if o.enable != spec.enabled
        || o.policy_in.as_deref().unwrap_or("DROP") != want_in
        || o.policy_out.as_deref().unwrap_or("ACCEPT") != want_out
    {
        actions.push(Action::SetFirewallOptions {
            params: vec![
                ("enable".into(), if spec.enabled { "1" } else { "0" }.into()),
                ("policy_in".into(), want_in.into()),
                ("policy_out".into(), want_out.into()),
            ],
        });
    }
    let want: Vec<Params> = spec.rules.iter().enumerate().map(|(i, r)| rule_params(i, r)).collect();
    let have: Vec<Params> = fw.rules.iter().map(observed_rule_params).collect();
    let strip_pos = |p: &Params| p.iter().filter(|(k, _)| k != "pos").cloned().collect::<Params>();
    if want.iter().map(strip_pos).collect::<Vec<_>>() != have {
        let mut positions: Vec<u64> = fw.rules.iter().map(|r| r.pos).collect();
        positions.sort_unstable_by(|a, b| b.cmp(a));
        actions.push(Action::ReplaceFirewallRules {
            delete_positions: positions,
            create: want,
        });
    }
    actions
}

fn rule_params(pos: usize, r: &crate::api::FirewallRule) -> Params {
    let direction = match r.direction {
        crate::api::Direction::In => "in",
        crate::api::Direction::Out => "out",
    };
    let mut p = vec![("pos".to_string(), pos.to_string())];
    p.extend(rule_fields(
        direction,
        r.action.as_str(),
        r.enabled,
        [&r.proto, &r.dport, &r.sport, &r.source, &r.dest, &r.comment],
    ));
    p
}

fn observed_rule_params(r: &FirewallRuleEntry) -> Params {
    rule_fields(
        &r.direction,
        &r.action,
        r.enable,
        [&r.proto, &r.dport, &r.sport, &r.source, &r.dest, &r.comment],
    )
}

/// A rule as PVE's rule parameters, in one order for both sides of the comparison.
fn rule_fields(direction: &str, action: &str, enabled: bool, optional: [&Option<String>; 6]) -> Params {
    let mut p: Params = vec![
        ("type".into(), direction.into()),
        ("action".into(), action.into()),
        ("enable".into(), if enabled { "1" } else { "0" }.into()),
    ];
    for (k, v) in ["proto", "dport", "sport", "source", "dest", "comment"].into_iter().zip(optional) {
        if let Some(v) = v {
            p.push((k.into(), v.clone()));
        }
    }
    p
}

/// Config params that remove the operator's mark (for `deletionPolicy: Retain`).
pub fn remove_mark_params(cfg: &ObservedConfig) -> Params {
    let tags: Vec<String> = split_tags(cfg.effective("tags").unwrap_or(""))
        .into_iter()
        .filter(|t| !crate::reconcile::ownership::is_mark_tag(t))
        .collect();
    let desc = crate::reconcile::ownership::strip_mark_lines(cfg.effective("description").unwrap_or(""));
    let mut params: Params = vec![];
    let mut delete = vec![];
    if tags.is_empty() {
        delete.push("tags")
    } else {
        params.push(("tags".into(), tags.join(";")))
    }
    if desc.trim().is_empty() {
        delete.push("description")
    } else {
        params.push(("description".into(), desc))
    }
    if !delete.is_empty() {
        params.push(("delete".into(), delete.join(",")));
    }
    params
}
