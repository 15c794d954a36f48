//! Host devices a guest gets: PCI and USB devices of a VM, device nodes of a container.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::common::*;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostPci {
    /// `hostpci0` … `hostpci15`.
    #[schemars(regex(pattern = r"^hostpci([0-9]|1[0-5])$"))]
    pub slot: String,
    /// Host PCI id (`0000:01:00.0` or `01:00`) or a resource mapping id prefixed with `mapping=`.
    #[schemars(regex(pattern = r"^(mapping=[a-zA-Z][a-zA-Z0-9_-]*|([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(\.[0-7])?)$"))]
    pub device: String,
    /// Present as PCIe (needs machine q35).
    #[serde(default, skip_serializing_if = "is_false")]
    pub pcie: bool,
    /// Primary GPU.
    #[serde(default, skip_serializing_if = "is_false")]
    pub x_vga: bool,
}

/// A USB device of a VM: exactly one of `host` and `mapping`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.host) != has(self.mapping)").message("usb: set exactly one of host or mapping"))]
pub struct UsbDevice {
    /// `usb0` … `usb14`.
    #[schemars(regex(pattern = r"^usb([0-9]|1[0-4])$"))]
    pub slot: String,
    /// A host device `vendor:product` (hexadecimal, e.g. `1a86:7523`), a host port `bus-port`
    /// (e.g. `1-2.3`), or `spice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^((0x)?[0-9A-Fa-f]{4}:(0x)?[0-9A-Fa-f]{4}|[0-9]+-[0-9]+(\.[0-9]+)*|[Ss][Pp][Ii][Cc][Ee])$"))]
    pub host: Option<String>,
    /// A cluster-wide USB resource mapping id (PVE 8+), which survives moving the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_-]*$"))]
    pub mapping: Option<String>,
    /// A USB 3 device or port (irrelevant for modern guests, which use xhci).
    #[serde(default, skip_serializing_if = "is_false")]
    pub usb3: bool,
}

/// A host device node passed into a container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LxcDevice {
    /// `dev0` … `dev255`.
    #[schemars(regex(pattern = r"^dev([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])$"))]
    pub slot: String,
    /// The device node on the host, e.g. `/dev/dri/renderD128`.
    #[schemars(regex(pattern = r"^/dev/[^,=]+$"), length(max = 255))]
    pub path: String,
    /// Group id of the device node inside the container (e.g. the `render` group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// User id of the device node inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Access mode of the device node, octal (e.g. `0660`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^0[0-7]{3}$"))]
    pub mode: Option<String>,
    /// Let the container read but not write the device.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deny_write: bool,
}
