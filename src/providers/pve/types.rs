//! Typed answers of the PVE calls we use. Numbers are read leniently because
//! PVE sends some integers as strings.

use serde::Deserialize;

use super::codec::de;

/// One entry of `GET /cluster/resources?type=vm`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ClusterResource {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(deserialize_with = "de::u64_lenient")]
    pub vmid: u64,
    #[serde(default)]
    pub name: Option<String>,
    pub node: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub template: bool,
    #[serde(default)]
    pub tags: Option<String>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default)]
    pub pool: Option<String>,
    /// Seconds since the guest started (0 when stopped).
    #[serde(default, deserialize_with = "de::opt_u64_lenient")]
    pub uptime: Option<u64>,
}

impl ClusterResource {
    /// Tags split on PVE's separators.
    pub fn tag_list(&self) -> Vec<String> {
        split_tags(self.tags.as_deref().unwrap_or(""))
    }
}

pub fn split_tags(s: &str) -> Vec<String> {
    s.split([';', ',', ' ']).filter(|t| !t.is_empty()).map(str::to_string).collect()
}

/// One entry of `GET /nodes`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub node: String,
    pub status: String,
    #[serde(default, deserialize_with = "de::opt_u64_lenient")]
    pub mem: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64_lenient")]
    pub maxmem: Option<u64>,
}

impl NodeInfo {
    pub fn free_memory(&self) -> u64 {
        self.maxmem.unwrap_or(0).saturating_sub(self.mem.unwrap_or(0))
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct TaskStatus {
    pub upid: String,
    pub status: String,
    #[serde(default)]
    pub exitstatus: Option<String>,
    #[serde(rename = "type")]
    pub task_type: String,
}

/// A guest in no backup job (`GET /cluster/backup-info/not-backed-up`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct UnprotectedGuest {
    #[serde(deserialize_with = "de::u64_lenient")]
    pub vmid: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
}

/// One entry of `GET /nodes/{node}/tasks` (finished tasks carry their exit status as `status`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct TaskListEntry {
    pub upid: String,
    #[serde(default, deserialize_with = "de::u64_lenient")]
    pub starttime: u64,
    #[serde(rename = "type")]
    pub task_type: String,
    #[serde(default)]
    pub status: Option<String>,
}

impl TaskStatus {
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
    /// `OK` and `WARNINGS: n` are success; anything else is the error text.
    pub fn failure(&self) -> Option<&str> {
        match self.exitstatus.as_deref() {
            _ if self.is_running() => None,
            Some("OK") => None,
            Some(s) if s.starts_with("WARNINGS") => None,
            Some(s) => Some(s),
            None => Some("task stopped without exit status"),
        }
    }
}

/// One entry of `GET .../pending`: the current value and any pending change.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PendingEntry {
    pub key: String,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    #[serde(default)]
    pub pending: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub delete: bool,
}

/// `GET .../firewall/options` (the keys we manage).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct FirewallOptions {
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub enable: bool,
    #[serde(default)]
    pub policy_in: Option<String>,
    #[serde(default)]
    pub policy_out: Option<String>,
}

/// One entry of `GET .../firewall/rules`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct FirewallRuleEntry {
    #[serde(deserialize_with = "de::u64_lenient")]
    pub pos: u64,
    #[serde(rename = "type")]
    pub direction: String,
    pub action: String,
    #[serde(default)]
    pub proto: Option<String>,
    #[serde(default)]
    pub dport: Option<String>,
    #[serde(default)]
    pub sport: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub dest: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub enable: bool,
}

/// One entry of `GET /cluster/backup` (a scheduled vzdump job).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct BackupJob {
    pub id: String,
    #[serde(default, deserialize_with = "de::opt_bool_lenient")]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub storage: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub compress: Option<String>,
    /// Comma-separated VMIDs.
    #[serde(default)]
    pub vmid: Option<String>,
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub all: bool,
    #[serde(default)]
    pub pool: Option<String>,
    /// VMIDs `all` leaves out (comma-separated).
    #[serde(default)]
    pub exclude: Option<String>,
    /// An object of strings when read (`{"keep-daily": "7"}`), a property string when written.
    #[serde(default, rename = "prune-backups")]
    pub prune_backups: Option<serde_json::Value>,
    #[serde(default, rename = "notes-template")]
    pub notes_template: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default, rename = "next-run", deserialize_with = "de::opt_u64_lenient")]
    pub next_run: Option<u64>,
    /// Every other option the job has (`node`, `mailto`, `bwlimit`, `fleecing`, …), as answered.
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
}

impl BackupJob {
    /// PVE's default is enabled.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

/// One entry of `GET /nodes/{node}/storage`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct StorageInfo {
    pub storage: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Comma-separated content types (`images,rootdir`).
    #[serde(default)]
    pub content: String,
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub active: bool,
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub shared: bool,
}

impl StorageInfo {
    pub fn accepts(&self, content: &str) -> bool {
        self.content.split(',').any(|c| c.trim() == content)
    }
}

/// One entry of `GET /nodes/{node}/storage/{storage}/content`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct StorageVolume {
    pub volid: String,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default, deserialize_with = "de::u64_lenient")]
    pub size: u64,
    #[serde(default, deserialize_with = "de::opt_u64_lenient")]
    pub ctime: Option<u64>,
    #[serde(default, deserialize_with = "de::opt_u64_lenient")]
    pub vmid: Option<u64>,
    /// Backups: protected from pruning.
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub protected: bool,
    /// Backups on a PBS storage: the last verification.
    #[serde(default)]
    pub verification: Option<Verification>,
    #[serde(default)]
    pub notes: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Verification {
    /// `ok` or `failed`.
    pub state: String,
}

/// One entry of `GET /nodes/{node}/network`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct NetworkInterface {
    pub iface: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub active: bool,
}

/// A guest's network interface as its agent (QEMU) or the container runtime (LXC) reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GuestNic {
    /// Name inside the guest (`eth0`, `ens18`).
    pub name: String,
    /// Hardware address, upper case.
    pub mac: Option<String>,
    /// Usable addresses (no loopback, no link-local).
    pub ips: Vec<String>,
}

/// QEMU guest agent `network-get-interfaces` answer.
#[derive(Clone, Debug, Deserialize)]
pub struct AgentInterfaces {
    pub result: Vec<AgentInterface>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AgentInterface {
    pub name: String,
    #[serde(rename = "hardware-address", default)]
    pub hardware_address: Option<String>,
    #[serde(rename = "ip-addresses", default)]
    pub ip_addresses: Vec<AgentIp>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AgentIp {
    #[serde(rename = "ip-address")]
    pub ip_address: String,
}

/// LXC `GET .../interfaces` entry (old and new field names both accepted).
#[derive(Clone, Debug, Deserialize)]
pub struct LxcInterface {
    pub name: String,
    #[serde(default)]
    pub hwaddr: Option<String>,
    #[serde(default)]
    pub inet: Option<String>,
    #[serde(default)]
    pub inet6: Option<String>,
}

/// Addresses worth reporting: no loopback, no link-local.
pub fn usable_ip(ip: &str) -> bool {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => !a.is_loopback() && !a.is_link_local() && !a.is_unspecified(),
        Ok(std::net::IpAddr::V6(a)) => !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80 && !a.is_unspecified(),
        Err(_) => false,
    }
}

/// `POST .../agent/exec`.
#[derive(Clone, Debug, Deserialize)]
pub struct ExecStarted {
    #[serde(deserialize_with = "de::u64_lenient")]
    pub pid: u64,
}

/// `GET .../agent/exec-status` (PVE passes `exited` on as 0/1).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ExecStatus {
    #[serde(default, deserialize_with = "de::bool_lenient")]
    pub exited: bool,
    #[serde(default)]
    pub exitcode: Option<i64>,
    /// Set when a signal ended it.
    #[serde(default)]
    pub signal: Option<i64>,
    #[serde(rename = "out-data", default)]
    pub out: String,
    #[serde(rename = "err-data", default)]
    pub err: String,
}
