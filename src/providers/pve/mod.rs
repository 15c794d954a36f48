//! Proxmox VE: the trait the reconcilers see and its HTTP implementation.

pub mod client;
pub mod codec;
pub mod error;
pub mod types;

use std::future::Future;

pub use client::PveClient;
pub use codec::Upid;
pub use error::{Error, ErrorClass};
pub use types::*;

/// Form parameters in the order they are sent.
pub type Params = Vec<(String, String)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuestKind {
    Qemu,
    Lxc,
}

impl GuestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Qemu => "qemu",
            GuestKind::Lxc => "lxc",
        }
    }
    pub fn from_resource_type(s: &str) -> Option<Self> {
        match s {
            "qemu" => Some(GuestKind::Qemu),
            "lxc" => Some(GuestKind::Lxc),
            _ => None,
        }
    }
}

/// The Proxmox VE operations the guest reconciler uses. Method names follow the API.
pub trait PveApi: Send + Sync {
    /// How long after a QEMU guest starts its agent is worth asking (from the endpoint's config).
    fn agent_boot_grace(&self) -> std::time::Duration {
        crate::config::AGENT_BOOT_GRACE
    }
    fn cluster_resources(&self) -> impl Future<Output = Result<Vec<ClusterResource>, Error>> + Send;
    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeInfo>, Error>> + Send;
    /// `/cluster/nextid`: the next free VMID, or `wanted` if it is free (Conflict if not).
    fn next_id(&self, wanted: Option<u32>) -> impl Future<Output = Result<u32, Error>> + Send;
    fn pending(&self, node: &str, kind: GuestKind, vmid: u32) -> impl Future<Output = Result<Vec<PendingEntry>, Error>> + Send;
    fn create(&self, node: &str, kind: GuestKind, params: Params) -> impl Future<Output = Result<Upid, Error>> + Send;
    fn clone_guest(&self, node: &str, kind: GuestKind, template: u32, params: Params) -> impl Future<Output = Result<Upid, Error>> + Send;
    fn update_config(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        params: Params,
    ) -> impl Future<Output = Result<Option<Upid>, Error>> + Send;
    fn resize(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        disk: &str,
        size: &str,
    ) -> impl Future<Output = Result<Option<Upid>, Error>> + Send;
    fn power(&self, node: &str, kind: GuestKind, vmid: u32, action: &str) -> impl Future<Output = Result<Upid, Error>> + Send;
    fn delete_guest(&self, node: &str, kind: GuestKind, vmid: u32) -> impl Future<Output = Result<Upid, Error>> + Send;
    fn snapshot(&self, node: &str, kind: GuestKind, vmid: u32, name: &str) -> impl Future<Output = Result<Upid, Error>> + Send;
    fn rollback(&self, node: &str, kind: GuestKind, vmid: u32, name: &str) -> impl Future<Output = Result<Upid, Error>> + Send;
    fn task_status(&self, upid: &Upid) -> impl Future<Output = Result<TaskStatus, Error>> + Send;
    fn firewall_options(&self, node: &str, kind: GuestKind, vmid: u32) -> impl Future<Output = Result<FirewallOptions, Error>> + Send;
    fn set_firewall_options(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        params: Params,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    fn firewall_rules(&self, node: &str, kind: GuestKind, vmid: u32) -> impl Future<Output = Result<Vec<FirewallRuleEntry>, Error>> + Send;
    fn create_firewall_rule(
        &self,
        node: &str,
        kind: GuestKind,
        vmid: u32,
        params: Params,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    fn delete_firewall_rule(&self, node: &str, kind: GuestKind, vmid: u32, pos: u64) -> impl Future<Output = Result<(), Error>> + Send;
    /// The guest's interfaces with their addresses (loopback left out).
    fn guest_interfaces(&self, node: &str, kind: GuestKind, vmid: u32) -> impl Future<Output = Result<Vec<GuestNic>, Error>> + Send;
    /// Start a one-off backup on `node` (`vmid` lists that node's guests).
    fn vzdump(&self, node: &str, params: Params) -> impl Future<Output = Result<Upid, Error>> + Send;
    /// A node's tasks of one type started at or after `since` (epoch seconds), newest first.
    fn node_tasks(&self, node: &str, typefilter: &str, since: u64) -> impl Future<Output = Result<Vec<TaskListEntry>, Error>> + Send;
    /// The lines a task wrote.
    fn task_log(&self, upid: &Upid) -> impl Future<Output = Result<Vec<String>, Error>> + Send;
    /// Guests no enabled backup job covers.
    fn not_backed_up(&self) -> impl Future<Output = Result<Vec<UnprotectedGuest>, Error>> + Send;
    fn backup_jobs(&self) -> impl Future<Output = Result<Vec<BackupJob>, Error>> + Send;
    fn create_backup_job(&self, params: Params) -> impl Future<Output = Result<(), Error>> + Send;
    fn update_backup_job(&self, id: &str, params: Params) -> impl Future<Output = Result<(), Error>> + Send;
    fn delete_backup_job(&self, id: &str) -> impl Future<Output = Result<(), Error>> + Send;
    fn node_storages(&self, node: &str) -> impl Future<Output = Result<Vec<StorageInfo>, Error>> + Send;
    fn storage_content(
        &self,
        node: &str,
        storage: &str,
        content: Option<&str>,
    ) -> impl Future<Output = Result<Vec<StorageVolume>, Error>> + Send;
    /// The node's bridges (Linux, OVS and SDN vnets: what a NIC can be plugged into).
    fn node_bridges(&self, node: &str) -> impl Future<Output = Result<Vec<NetworkInterface>, Error>> + Send;
}

/// The calls guest updates add: the QEMU guest agent's exec family and the
/// snapshot steps an update goes through.
pub trait PveUpdateApi: PveApi {
    /// Start `argv` inside a QEMU guest through its agent; the PID to poll.
    fn agent_exec(&self, node: &str, vmid: u32, argv: &[String]) -> impl Future<Output = Result<u64, Error>> + Send;
    fn agent_exec_status(&self, node: &str, vmid: u32, pid: u64) -> impl Future<Output = Result<ExecStatus, Error>> + Send;
    /// Roll back to a snapshot and start the guest when done.
    fn rollback_and_start(&self, node: &str, kind: GuestKind, vmid: u32, name: &str) -> impl Future<Output = Result<Upid, Error>> + Send;
    fn delete_snapshot(&self, node: &str, kind: GuestKind, vmid: u32, name: &str) -> impl Future<Output = Result<Upid, Error>> + Send;
}
