//! `ProxmoxGuest`: a QEMU VM or LXC container on Proxmox VE.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{
    common::*,
    passthrough::{HostPci, LxcDevice, UsbDevice},
};

/// A QEMU virtual machine or LXC container on a Proxmox VE cluster, kept as declared.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "homelab.dev",
    version = "v1alpha1",
    kind = "ProxmoxGuest",
    namespaced,
    status = "ProxmoxGuestStatus",
    shortname = "pxg",
    category = "homelab",
    cel,
    validation = Rule::new("has(self.spec.name) || self.metadata.name.matches('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$')").message("metadata.name must be a DNS label (lower case letters, digits, '-') when spec.name is not set"),
    printcolumn = r#"{"name":"VMID","type":"integer","jsonPath":".status.vmid"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.node"}"#,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"IP","type":"string","jsonPath":".status.ips[0]"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type == 'lxc' || !has(self.source.osTemplate)").message("source.osTemplate is only valid with type: lxc"),
    validation = Rule::new("self.type == 'qemu' || !has(self.source.iso)").message("source.iso is only valid with type: qemu"),
    validation = Rule::new("self.type == 'qemu' || !has(self.cloudInit)").message("cloudInit is only valid with type: qemu"),
    validation = Rule::new("self.type == 'qemu' || !has(self.hostPci) || size(self.hostPci) == 0").message("hostPci is only valid with type: qemu"),
    validation = Rule::new("self.type == 'qemu' || !has(self.usb) || size(self.usb) == 0").message("usb is only valid with type: qemu"),
    validation = Rule::new("self.type == 'lxc' || !has(self.devices) || size(self.devices) == 0").message("devices are only valid with type: lxc"),
    validation = Rule::new("self.type == 'qemu' || !has(self.balloonMiB)").message("balloonMiB is only valid with type: qemu"),
    validation = Rule::new("self.type == 'qemu' || !has(self.agent)").message("agent is only valid with type: qemu"),
    validation = Rule::new("self.type == 'lxc' || !has(self.swapMiB)").message("swapMiB is only valid with type: lxc"),
    validation = Rule::new("self.type == 'lxc' || !has(self.mounts) || size(self.mounts) == 0").message("mounts are only valid with type: lxc"),
    validation = Rule::new("self.type == 'lxc' || !has(self.unprivileged)").message("unprivileged is only valid with type: lxc"),
    validation = Rule::new("self.type == 'lxc' || !has(self.features)").message("features are only valid with type: lxc"),
    validation = Rule::new("!has(self.node) || !has(self.allowedNodes) || size(self.allowedNodes) == 0").message("set either node or allowedNodes, not both"),
    validation = Rule::new("!has(self.balloonMiB) || self.balloonMiB <= self.memoryMiB").message("balloonMiB must not exceed memoryMiB"),
    validation = Rule::new("self.type == oldSelf.type").message("type is immutable; create a new ProxmoxGuest instead"),
    validation = Rule::new("self.source == oldSelf.source").message("source is immutable after creation"),
    validation = Rule::new("!has(oldSelf.vmid) || (has(self.vmid) && self.vmid == oldSelf.vmid)").message("vmid is immutable once set"),
    validation = Rule::new("self.type != 'lxc' || self.disks.exists(d, d.slot == 'rootfs')").message("an lxc guest needs a disk with slot: rootfs"),
    validation = Rule::new("self.type != 'qemu' || self.disks.all(d, d.slot != 'rootfs')").message("slot rootfs is only valid with type: lxc"),
    validation = Rule::new("self.type != 'qemu' || has(self.cloudInit) || !has(self.network) || self.network.all(n, (!has(n.ipv4) || n.ipv4 == 'dhcp') && (!has(n.ipv6) || n.ipv6 == 'dhcp' || n.ipv6 == 'auto') && !has(n.gateway4) && !has(n.gateway6))").message("a VM's static addresses and gateways (network[].ipv4, ipv6, gateway4, gateway6) are set through cloud-init: add cloudInit (cloudInit: {} will do), or leave them to DHCP")
)]
pub struct ProxmoxGuestSpec {
    /// Name of the Proxmox VE endpoint in the operator config (`proxmox:` section).
    #[serde(default = "default_endpoint")]
    #[schemars(length(min = 1, max = 63))]
    pub cluster: String,
    /// `qemu` for a virtual machine, `lxc` for a container. Immutable.
    #[serde(rename = "type")]
    pub guest_type: GuestType,
    /// Node the guest runs on. When unset the operator places the guest on the
    /// online node (of `allowedNodes`, if given) with the most free memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$"))]
    pub node: Option<String>,
    /// Nodes the operator may place the guest on when `node` is unset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(max = 63), regex(pattern = r"^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$"))
    )]
    pub allowed_nodes: Vec<String>,
    /// Proxmox VMID. Allocated from `/cluster/nextid` when unset; immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 999_999_999))]
    pub vmid: Option<u32>,
    /// Guest name (QEMU) or hostname (LXC); a DNS name, as PVE takes it (`web01`, `HomeAssistant`,
    /// `nas.home.arpa`). Default: `metadata.name`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(
        length(max = 253),
        regex(pattern = r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
    )]
    pub name: String,
    /// Free text shown in the Proxmox UI. The operator appends its ownership line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8000))]
    pub description: Option<String>,
    /// Proxmox tags (lower case; letters, digits, `_ - + .`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(regex(pattern = r"^[a-z0-9_][a-z0-9_+.-]*$"), length(max = 64)))]
    pub tags: Vec<String>,
    /// Resource pool the guest belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._-]*$"))]
    pub pool: Option<String>,
    /// Where the guest comes from: exactly one of `clone`, `osTemplate`, `iso`. Immutable.
    pub source: GuestSource,
    /// CPU layout.
    #[serde(default)]
    pub cpu: CpuSpec,
    /// Memory in MiB.
    #[serde(rename = "memoryMiB")]
    #[schemars(range(min = 16, max = 8_388_608))]
    pub memory_mib: u32,
    /// QEMU balloon minimum in MiB (0 disables the balloon device).
    #[serde(rename = "balloonMiB", default, skip_serializing_if = "Option::is_none")]
    pub balloon_mib: Option<u32>,
    /// QEMU guest agent (default on: it is how `status.ips` is learned).
    /// `false` keeps it off, as an adopted VM may have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<bool>,
    /// LXC swap in MiB.
    #[serde(rename = "swapMiB", default, skip_serializing_if = "Option::is_none")]
    pub swap_mib: Option<u32>,
    /// Disks: QEMU `scsiN`/`virtioN`/`sataN`/`ideN`, LXC `rootfs`. Disks only grow.
    #[serde(default)]
    #[schemars(length(max = 32))]
    /// (One entry per slot: the apiserver refuses two with the same `slot`.)
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["slot"]))]
    pub disks: Vec<Disk>,
    /// LXC mount points (`mpN`): a new volume or a bind mount of a host path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    /// (One entry per slot: the apiserver refuses two with the same `slot`.)
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["slot"]))]
    pub mounts: Vec<Mount>,
    /// Network interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    /// (One entry per slot: the apiserver refuses two with the same `slot`.)
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["slot"]))]
    pub network: Vec<Nic>,
    /// Cloud-init settings (QEMU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,
    /// Run the container unprivileged (LXC; default true, fixed at creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unprivileged: Option<bool>,
    /// LXC features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<LxcFeatures>,
    /// The guest's own Proxmox firewall.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<FirewallSpec>,
    /// PCI passthrough devices (QEMU).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    /// (One entry per slot: the apiserver refuses two with the same `slot`.)
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["slot"]))]
    pub host_pci: Vec<HostPci>,
    /// USB devices (QEMU `usbN`): a host device, a host port or a resource mapping.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 15))]
    /// (One entry per slot: the apiserver refuses two with the same `slot`.)
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["slot"]))]
    pub usb: Vec<UsbDevice>,
    /// Host devices passed into the container (LXC `devN`), e.g. `/dev/dri/renderD128`
    /// for a media server's hardware transcoding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    /// (One entry per slot: the apiserver refuses two with the same `slot`.)
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["slot"]))]
    pub devices: Vec<LxcDevice>,
    /// Start the guest when its node boots.
    #[serde(default, skip_serializing_if = "is_false")]
    pub start_on_boot: bool,
    /// Boot order and delays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<Startup>,
    /// Wanted power state.
    #[serde(default)]
    pub power: PowerState,
    /// Proxmox protection flag: blocks removal of the guest and its disks.
    #[serde(default, skip_serializing_if = "is_false")]
    pub protection: bool,
    /// What deleting this resource does to the guest (default `Retain`).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Take over an existing guest with this VMID (or name) that the operator did not create.
    #[serde(default, skip_serializing_if = "is_false")]
    pub adopt: bool,
    /// `Reconcile` (default), `ObserveOnly` (report drift, never write) or `Paused`.
    #[serde(default)]
    pub mode: ManagementMode,
    /// Whether changes that need a reboot are applied with a reboot (`RebootIfNeeded`)
    /// or only reported in `status.pendingChanges` (`Manual`, default).
    #[serde(default)]
    pub update_policy: ConfigUpdatePolicy,
    /// Safety nets for risky changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety: Option<Safety>,
    /// Publish the guest's address in DNS: the operator keeps an owned DnsRecord
    /// (`<name>-dns`, and `<name>-dns6` for IPv6) that follows `status.ips`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<GuestDns>,
    /// Publish the guest through the reverse proxy: the operator keeps an owned
    /// ProxyHost `<name>-proxy` that forwards the domains to this guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<GuestProxy>,
    /// Check the guest's health: the operator keeps an owned MonitorTarget
    /// `<name>-monitor` aimed at its address, quiet while the operator itself
    /// reboots or stops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<super::GuestMonitor>,
    /// Back this guest up with a BackupPolicy of this namespace (besides any whose selector matches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<GuestBackup>,
    /// Keep this guest updated by an UpdatePolicy of this namespace (besides any whose selector matches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updates: Option<GuestUpdates>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestBackup {
    /// Name of the BackupPolicy.
    #[schemars(length(min = 1, max = 253))]
    pub policy: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestUpdates {
    /// Name of the UpdatePolicy.
    #[schemars(length(min = 1, max = 253))]
    pub policy: String,
}

impl ProxmoxGuest {
    /// The spec with defaults that depend on metadata filled in (`name`).
    pub fn effective_spec(&self) -> ProxmoxGuestSpec {
        let mut spec = self.spec.clone();
        if spec.name.is_empty() {
            spec.name = self.metadata.name.clone().unwrap_or_default();
        }
        spec
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestProxy {
    /// Endpoint name in the config's `proxy:` section.
    #[serde(default = "default_endpoint")]
    pub provider: String,
    /// Host names to serve.
    #[schemars(length(min = 1, max = 100), inner(length(max = 253)))]
    pub domains: Vec<String>,
    /// The guest's port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Upstream scheme (default http).
    #[serde(default)]
    pub scheme: super::Scheme,
    /// TLS for the proxy host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::ProxyTls>,
    /// Allow websocket upgrades.
    #[serde(default, skip_serializing_if = "is_false")]
    pub websockets: bool,
    /// The guest NIC whose addresses are used, by config slot (`net0`, `net1`, …);
    /// default the first NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^net[0-9]{1,2}$"))]
    pub nic: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestDns {
    /// Endpoint name in the config's `dns:` section.
    #[serde(default = "default_endpoint")]
    pub provider: String,
    /// The zone, e.g. `home.arpa`.
    #[schemars(
        regex(pattern = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.?$"),
        length(max = 253)
    )]
    pub zone: String,
    /// Name relative to the zone (default: the guest's `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"))]
    pub name: Option<String>,
    /// TTL in seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub ttl: Option<u32>,
    /// Also publish IPv6 addresses as AAAA.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ipv6: bool,
    /// The guest NIC whose addresses are used, by config slot (`net0`, `net1`, …);
    /// default the first NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^net[0-9]{1,2}$"))]
    pub nic: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GuestType {
    Qemu,
    Lxc,
}

impl GuestType {
    pub fn as_str(self) -> &'static str {
        match self {
            GuestType::Qemu => "qemu",
            GuestType::Lxc => "lxc",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.clone) ? 1 : 0) + (has(self.osTemplate) ? 1 : 0) + (has(self.iso) ? 1 : 0) == 1").message("source needs exactly one of clone, osTemplate, iso"))]
pub struct GuestSource {
    /// Clone a template (QEMU or LXC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone: Option<CloneSource>,
    /// LXC OS template volume, e.g. `local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*:vztmpl/.+$"))]
    pub os_template: Option<String>,
    /// QEMU installer ISO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iso: Option<IsoSource>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.templateVmid) != has(self.templateName)").message("clone needs exactly one of templateVmid, templateName"))]
pub struct CloneSource {
    /// VMID of the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 999_999_999))]
    pub template_vmid: Option<u32>,
    /// Name of the template (must be unique in the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_name: Option<String>,
    /// Full copy (default) or linked clone.
    #[serde(default = "default_true")]
    pub full: bool,
    /// Target storage for a full clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_.-]*[a-zA-Z0-9]$"))]
    pub storage: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IsoSource {
    /// ISO volume, e.g. `local:iso/debian-13.1.0-amd64-netinst.iso`.
    #[schemars(regex(pattern = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*:iso/.+$"))]
    pub image: String,
    /// Proxmox OS type hint (`l26`, `win11`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(other|wxp|w2k|w2k3|w2k8|wvista|win7|win8|win10|win11|l24|l26|solaris)$"))]
    pub os_type: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuSpec {
    /// Cores per socket.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1024))]
    pub cores: u32,
    /// Sockets (QEMU).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 16))]
    pub sockets: u32,
    /// QEMU CPU type, e.g. `host` or `x86-64-v2-AES`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub cpu_type: Option<String>,
}

impl Default for CpuSpec {
    fn default() -> Self {
        Self {
            cores: 1,
            sockets: 1,
            cpu_type: None,
        }
    }
}

fn one() -> u32 {
    1
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// `scsiN`, `virtioN`, `sataN`, `ideN` (QEMU) or `rootfs` (LXC).
    #[schemars(regex(pattern = r"^(scsi([0-9]|[12][0-9]|30)|virtio([0-9]|1[0-5])|sata[0-5]|ide[0-3]|rootfs)$"))]
    pub slot: String,
    /// Storage id, e.g. `local-lvm`.
    #[schemars(regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_.-]*[a-zA-Z0-9]$"))]
    pub storage: String,
    /// Size in GiB. Disks grow in place; shrinking is refused.
    #[serde(rename = "sizeGiB")]
    #[schemars(range(min = 1, max = 131_072))]
    pub size_gib: u32,
    /// Tell the guest this is an SSD (QEMU).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ssd: bool,
    /// Pass discard/TRIM to the storage (QEMU).
    #[serde(default, skip_serializing_if = "is_false")]
    pub discard: bool,
    /// Own I/O thread (QEMU; needs `virtio-scsi-single` for SCSI).
    #[serde(default, skip_serializing_if = "is_false")]
    pub iothread: bool,
    /// Include in backups (default true).
    #[serde(default = "default_true")]
    pub backup: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.hostPath) != has(self.storage)").message("a mount needs exactly one of hostPath (bind mount) or storage + sizeGiB (volume)"))]
#[x_kube(validation = Rule::new("has(self.storage) == has(self.sizeGiB)").message("storage and sizeGiB go together"))]
pub struct Mount {
    /// `mp0` … `mp255`.
    #[schemars(regex(pattern = r"^mp([0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])$"))]
    pub slot: String,
    /// Path inside the container.
    #[schemars(regex(pattern = r"^/.*$"))]
    pub path: String,
    /// Host directory to bind-mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/.*$"))]
    pub host_path: Option<String>,
    /// Storage for a new volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_.-]*[a-zA-Z0-9]$"))]
    pub storage: Option<String>,
    /// Size of a new volume in GiB.
    #[serde(rename = "sizeGiB", default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 131_072))]
    pub size_gib: Option<u32>,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// Include a volume in backups.
    #[serde(default, skip_serializing_if = "is_false")]
    pub backup: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.gateway4) || (has(self.ipv4) && self.ipv4 != 'dhcp')").message("gateway4 needs a static ipv4"))]
#[x_kube(validation = Rule::new("!has(self.gateway6) || (has(self.ipv6) && self.ipv6 != 'dhcp' && self.ipv6 != 'auto')").message("gateway6 needs a static ipv6"))]
pub struct Nic {
    /// `net0` … `net31`.
    #[schemars(regex(pattern = r"^net([0-9]|[12][0-9]|3[01])$"))]
    pub slot: String,
    /// Bridge, e.g. `vmbr0`.
    #[schemars(regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$"))]
    pub bridge: String,
    /// VLAN tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4094))]
    pub vlan: Option<u16>,
    /// MTU (QEMU virtio: 1 = bridge MTU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65520))]
    pub mtu: Option<u32>,
    /// QEMU NIC model (default `virtio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<NicModel>,
    /// Interface name inside an LXC container (default `eth` + slot number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$"))]
    pub name: Option<String>,
    /// Fixed MAC address. When unset Proxmox picks one once and the operator keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-fA-F][02468aceACE](:[0-9a-fA-F]{2}){5}$"))]
    pub mac: Option<String>,
    /// Protect this interface with the Proxmox firewall.
    #[serde(default, skip_serializing_if = "is_false")]
    pub firewall: bool,
    /// `dhcp` or an IPv4 address in CIDR form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(dhcp|((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])/([0-9]|[12][0-9]|3[0-2]))$"
    ))]
    pub ipv4: Option<String>,
    /// IPv4 gateway (only with a static `ipv4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])$"))]
    pub gateway4: Option<String>,
    /// `dhcp`, `auto` (SLAAC) or an IPv6 address in CIDR form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(dhcp|auto|[0-9a-fA-F:]+/[0-9]{1,3})$"))]
    pub ipv6: Option<String>,
    /// IPv6 gateway (only with a static `ipv6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-fA-F:]+$"))]
    pub gateway6: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    Virtio,
    E1000,
    E1000e,
    Rtl8139,
    Vmxnet3,
}

impl NicModel {
    pub fn as_str(self) -> &'static str {
        match self {
            NicModel::Virtio => "virtio",
            NicModel::E1000 => "e1000",
            NicModel::E1000e => "e1000e",
            NicModel::Rtl8139 => "rtl8139",
            NicModel::Vmxnet3 => "vmxnet3",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudInit {
    /// Default user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The user's password, from a Secret in the same namespace. Set at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// SSH public keys, one per entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 16384)))]
    pub ssh_keys: Vec<String>,
    /// DNS server(s), space separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-fA-F:.]+([ ,;]+[0-9a-fA-F:.]+)*$"))]
    pub nameserver: Option<String>,
    /// DNS search domain(s), space separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*( +([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*)*$"
    ))]
    pub search_domain: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LxcFeatures {
    /// Allow nested containers (Docker, systemd services with namespaces).
    #[serde(default, skip_serializing_if = "is_false")]
    pub nesting: bool,
    /// Allow the keyctl() system call (Docker in unprivileged containers needs it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub keyctl: bool,
    /// Allow FUSE mounts inside the container.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fuse: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FirewallSpec {
    /// Turn the guest firewall on.
    #[serde(default)]
    pub enabled: bool,
    /// Policy for incoming traffic (default DROP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_in: Option<FirewallAction>,
    /// Policy for outgoing traffic (default ACCEPT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_out: Option<FirewallAction>,
    /// Ordered rules; the operator owns the guest's whole rule list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub rules: Vec<FirewallRule>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum FirewallAction {
    Accept,
    Drop,
    Reject,
}

impl FirewallAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FirewallAction::Accept => "ACCEPT",
            FirewallAction::Drop => "DROP",
            FirewallAction::Reject => "REJECT",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.dport) && !has(self.sport) || has(self.proto) && (self.proto == 'tcp' || self.proto == 'udp')").message("ports need proto tcp or udp"))]
pub struct FirewallRule {
    /// `in` (traffic to the guest) or `out`.
    pub direction: Direction,
    /// `ACCEPT`, `DROP` or `REJECT`.
    pub action: FirewallAction,
    /// IP protocol: a name from `/etc/protocols` (`tcp`, `udp`, `icmp`, `ipv6-icmp`, …) or its number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(tcp|udp|udplite|sctp|dccp|icmp|ipv6-icmp|igmp|gre|esp|ah|ipip|ipencap|ipv6|ospf|vrrp|pim|l2tp|rsvp|(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9]))$"
    ))]
    pub proto: Option<String>,
    /// Destination port(s): `22`, `80,443`, `8000:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(,(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?)*$"
    ))]
    pub dport: Option<String>,
    /// Source port(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(,(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?)*$"
    ))]
    pub sport: Option<String>,
    /// Source address, CIDR, range or alias (`+ipset`), or a comma list of addresses/CIDRs, as Proxmox's firewall takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(
            pattern = r"^(\+(dc/|guest/)?[A-Za-z][A-Za-z0-9_-]+|(dc/|guest/)?[A-Za-z][A-Za-z0-9_-]+|(((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(/([0-9]|[12][0-9]|3[0-2]))?|((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])-((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])|[0-9a-fA-F]*:[0-9a-fA-F:.]*(/[0-9]{1,3})?)(,(((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(/([0-9]|[12][0-9]|3[0-2]))?|((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])-((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])|[0-9a-fA-F]*:[0-9a-fA-F:.]*(/[0-9]{1,3})?))*)$"
        ),
        length(max = 512)
    )]
    pub source: Option<String>,
    /// Destination address, CIDR, range or alias (`+ipset`), or a comma list of addresses/CIDRs, as Proxmox's firewall takes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(
            pattern = r"^(\+(dc/|guest/)?[A-Za-z][A-Za-z0-9_-]+|(dc/|guest/)?[A-Za-z][A-Za-z0-9_-]+|(((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(/([0-9]|[12][0-9]|3[0-2]))?|((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])-((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])|[0-9a-fA-F]*:[0-9a-fA-F:.]*(/[0-9]{1,3})?)(,(((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(/([0-9]|[12][0-9]|3[0-2]))?|((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])-((25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])|[0-9a-fA-F]*:[0-9a-fA-F:.]*(/[0-9]{1,3})?))*)$"
        ),
        length(max = 512)
    )]
    pub dest: Option<String>,
    /// Free text shown in the Proxmox firewall view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub comment: Option<String>,
    /// Rule enabled (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Startup {
    /// Start order (lower first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
    /// Seconds to wait after starting before the next guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<u32>,
    /// Seconds to wait after stopping before the next guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum PowerState {
    #[default]
    Running,
    Stopped,
}

/// When changes that need a reboot are applied (the Rust name keeps it apart from the UpdatePolicy kind).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum ConfigUpdatePolicy {
    /// Report changes that need a reboot; apply them on the next reboot someone else does.
    #[default]
    Manual,
    /// Reboot the guest to apply changes that need it.
    RebootIfNeeded,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Safety {
    /// Snapshot before a risky change (reboot, disk resize) and roll back when the
    /// guest does not come back running.
    #[serde(default)]
    pub snapshot_before_change: bool,
}

/// What the operator observed, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxmoxGuestStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// VMID of the guest (recorded before it is created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
    /// Node the guest is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Power state reported by Proxmox (`running`, `stopped`, …; `absent` before creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Addresses reported by the QEMU guest agent or the LXC interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// The NICs with the addresses seen on each (matched by MAC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<GuestInterface>,
    /// The Proxmox task in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task: Option<TaskRef>,
    /// Differences between spec and guest that are not applied yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_changes: Vec<PendingChange>,
    /// Newest snapshot the operator took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_snapshot: Option<String>,
    /// Owned resources made for `spec.dns` (names of DnsRecords in this namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// Ready, Reconciling, Degraded, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl ProxmoxGuestStatus {
    /// The addresses of the NIC in `slot`, or of the first NIC. With no NIC
    /// mapped (an agent that hides MACs), every address of the guest.
    pub fn addresses(&self, slot: Option<&str>) -> Vec<String> {
        match slot {
            Some(s) => self
                .interfaces
                .iter()
                .find(|i| i.slot == s)
                .map(|i| i.ips.clone())
                .unwrap_or_default(),
            None if self.interfaces.is_empty() => self.ips.clone(),
            None => self.interfaces[0].ips.clone(),
        }
    }
}

/// A NIC of the guest and what was seen on it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestInterface {
    /// Config slot (`net0`).
    pub slot: String,
    /// Hardware address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Addresses seen on this NIC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRef {
    /// Proxmox task id (`UPID:node:…`).
    pub upid: String,
    /// What the task does (`create`, `start`, …).
    pub operation: String,
    /// RFC 3339 time the task started.
    pub started: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingChange {
    /// Proxmox config key (`cores`, `net0`, …) or spec field.
    pub field: String,
    /// Value the guest has now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Value the spec asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<String>,
    /// `Hot`, `NeedsReboot` or `NeedsRecreate`.
    pub class: ChangeClass,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema)]
pub enum ChangeClass {
    /// Applied to the running guest.
    Hot,
    /// Takes effect after a reboot.
    NeedsReboot,
    /// Only possible by re-creating the guest.
    NeedsRecreate,
}
