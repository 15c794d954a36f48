//! `UpdatePolicy`: which guests get OS updates, when, and how carefully; and
//! what each member's last check and run found.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{MaintenanceWindow, common::*};

/// OS updates for a set of guests: every update behind a snapshot, validated
/// by the guests' monitors, rolled back on failure.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "homelab.dev",
    version = "v1alpha1",
    kind = "UpdatePolicy",
    namespaced,
    status = "UpdatePolicyStatus",
    shortname = "upd",
    category = "homelab",
    cel,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Members","type":"integer","jsonPath":".status.memberCount"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.pending"}"#,
    printcolumn = r#"{"name":"Last run","type":"string","jsonPath":".status.lastResult"}"#,
    printcolumn = r#"{"name":"Next run","type":"string","jsonPath":".status.nextRun"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.cluster == oldSelf.cluster").message("cluster is immutable"),
    validation = Rule::new("!has(self.keepSnapshot) || self.keepSnapshot.matches('^([0-9]{1,5}[wdhm])+$')").message("keepSnapshot is a duration such as 24h, 7d or 0h")
)]
pub struct UpdatePolicySpec {
    /// Proxmox endpoint name in the config's `proxmox:` section.
    #[serde(default = "default_endpoint")]
    #[schemars(length(min = 1, max = 63))]
    pub cluster: String,
    /// ProxmoxGuests in this namespace to update, by label (guests may also name the policy in `spec.updates.policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// When runs start, in cron syntax (UTC) as a Kubernetes CronJob (`0 4 * * 0`, `@weekly`); without it only on request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^(@(yearly|annually|monthly|weekly|daily|hourly)|[0-9*/,-]+ [0-9*/,-]+ [0-9*/,?LW-]+ [0-9A-Za-z*/,-]+ [0-9A-Za-z*/,?L#-]+)$"
    ))]
    pub schedule: Option<String>,
    /// When guests may be updated: a guest's update starts only inside a window with its timeout still left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub windows: Vec<MaintenanceWindow>,
    /// `Check` (default: only find out what is pending) or `Apply`.
    #[serde(default)]
    pub mode: UpdateMode,
    /// How many guests are updated at once.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub max_parallel: u32,
    /// After a guest's update fails, leave the members not started yet alone (default true).
    #[serde(default = "default_true")]
    pub stop_on_failure: bool,
    /// What runs inside the guests instead of the package manager's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<UpdateCommands>,
    /// How long the update command may run, in minutes.
    #[serde(default = "thirty")]
    #[schemars(range(min = 1, max = 1440))]
    pub timeout_minutes: u32,
    /// `IfRequired` (default: when the guest says so), `Always` or `Never`.
    #[serde(default)]
    pub reboot: RebootPolicy,
    /// How an update is judged to have worked.
    #[serde(default)]
    pub validation: Validation,
    /// Free space the guest's root file system needs before an update, in MiB.
    #[serde(default = "default_free")]
    #[schemars(range(min = 0, max = 1048576))]
    pub min_free_mi_b: u32,
    /// How long the operator keeps the snapshot it took after a run (`24h`, `7d`; `0h` deletes it at once).
    #[serde(default = "default_keep")]
    pub keep_snapshot: String,
    /// Notification channels (names in the config's `notifications:` section): one message per run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 1, max = 63)))]
    pub notify: Vec<String>,
    /// How containers (which have no guest agent) are reached: SSH to their node (`pct exec`) or to the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshAccess>,
}

/// SSH for containers, with the key from a Secret and the host keys pinned.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SshAccess {
    /// `Node` (default): SSH to the container's Proxmox node and run `pct exec <vmid>` there; `Guest`: SSH to the container's address.
    #[serde(default)]
    pub via: SshVia,
    /// The user to log in as (`Node` needs one allowed to run `pct`, usually root).
    #[serde(default = "root")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[a-z_][a-z0-9_.-]*$"))]
    pub user: String,
    /// The SSH port (default 22).
    #[serde(default = "ssh_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// An OpenSSH private key (unencrypted), in a Secret of this namespace.
    pub private_key_secret: SecretKeyRef,
    /// `known_hosts` lines for every host reached (the nodes or the containers): a host whose key is not there is refused.
    pub known_hosts_secret: SecretKeyRef,
    /// Addresses of the nodes by name, where the node's name does not resolve (`pve1: 10.0.0.11`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub nodes: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum SshVia {
    #[default]
    Node,
    Guest,
}

fn root() -> String {
    "root".into()
}

fn ssh_port() -> u16 {
    22
}

fn one() -> u32 {
    1
}

fn thirty() -> u32 {
    30
}

fn default_free() -> u32 {
    512
}

fn default_keep() -> String {
    "24h".into()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum UpdateMode {
    /// Only find out which updates are pending.
    #[default]
    Check,
    /// Snapshot, update, validate, roll back on failure.
    Apply,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum RebootPolicy {
    /// When the guest says one is needed (`/var/run/reboot-required`, `needs-restarting -r`).
    #[default]
    IfRequired,
    Always,
    Never,
}

/// Shell commands run inside the guests (`sh -c`), replacing the package manager's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateCommands {
    /// Prints the pending updates, one package per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub check: Option<String>,
    /// Installs them, non-interactively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub apply: Option<String>,
}

/// After an update (and its reboot): the guest runs, its agent answers, every
/// MonitorTarget aimed at it is Up, and the command (if any) exits 0.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    /// How long the guest has to pass, in seconds, before it is rolled back.
    #[serde(default = "ten_minutes")]
    #[schemars(range(min = 5, max = 43200))]
    pub timeout_seconds: u32,
    /// A shell command run inside the guest that must exit 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub command: Option<String>,
}

impl Default for Validation {
    fn default() -> Self {
        Self {
            timeout_seconds: ten_minutes(),
            command: None,
        }
    }
}

fn ten_minutes() -> u32 {
    600
}

/// What the operator observed, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePolicyStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many members there are.
    #[serde(default)]
    pub member_count: u32,
    /// Updates pending over all members, as last checked.
    #[serde(default)]
    pub pending: u32,
    /// Each member: what is pending and how its last run went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<UpdateMember>,
    /// The run in flight, or the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<UpdateRun>,
    /// The last run's result in a few words (`2 updated, 1 rolled back`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    /// When the schedule starts the next run (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// The last `homelab.dev/update-now` value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,
    /// Snapshots the operator took and still keeps, deleted once `keepUntil` passes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<KeptSnapshot>,
    /// Ready, Reconciling, Degraded, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One run over the members (scheduled, or asked for by annotation).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRun {
    /// The run's id: it names its snapshots and its files inside the guests.
    pub id: String,
    /// What started it: `schedule <time>`, or the `homelab.dev/update-now` value.
    pub request: String,
    /// The policy's mode when it started.
    pub mode: UpdateMode,
    /// RFC 3339.
    pub started: String,
    /// When its last member was done (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Whether its one notification went out.
    #[serde(default, skip_serializing_if = "is_false")]
    pub notified: bool,
}

/// A member and what the operator knows of its updates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateMember {
    /// The ProxmoxGuest.
    pub name: String,
    /// Its VMID.
    pub vmid: u32,
    /// The package manager found (`apt`, `apk`, `dnf`, `pacman`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_manager: Option<String>,
    /// Updates pending at the last check.
    #[serde(default)]
    pub pending: u32,
    /// Of those, security updates (where the package manager tells).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<u32>,
    /// The first pending packages' names (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// When it was last checked (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked: Option<String>,
    /// Its part of the run in flight, or of the last run that reached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<MemberRun>,
}

/// One member's run, saved before every call it needs, so a restarted
/// operator resumes it at the same step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberRun {
    /// The run's id.
    pub run: String,
    /// Where it is: Waiting, Preflight, Snapshot, Update, Reboot, Validate, Rollback, Revalidate, Done.
    pub step: UpdateStep,
    /// How it ended: UpToDate, Checked, Updated, RolledBack, Skipped, Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<UpdateResult>,
    /// When it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Why it failed, was skipped or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The snapshot taken before the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The Proxmox task this step waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The update was started inside the guest (it runs there once per run, whatever happens to the operator).
    #[serde(default, skip_serializing_if = "is_false")]
    pub launched: bool,
    /// When the current step began (RFC 3339): timeouts count from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_since: Option<String>,
    /// Packages the update changed.
    #[serde(default)]
    pub packages_changed: u32,
    /// The guest was rebooted after the update.
    #[serde(default, skip_serializing_if = "is_false")]
    pub rebooted: bool,
    /// The guest was rolled back to the snapshot.
    #[serde(default, skip_serializing_if = "is_false")]
    pub rolled_back: bool,
    /// The update's last lines of output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum UpdateStep {
    /// Not reached yet in this run.
    #[default]
    Waiting,
    /// The guest runs, answers, allows exec and has room; what is pending.
    Preflight,
    Snapshot,
    Update,
    Reboot,
    Validate,
    Rollback,
    /// The rolled-back guest is checked again.
    Revalidate,
    Done,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum UpdateResult {
    /// Nothing was pending.
    UpToDate,
    /// Checked only (mode Check).
    Checked,
    Updated,
    /// The update or its validation failed; the guest is back at its snapshot.
    RolledBack,
    /// Left alone, with the reason (preflight, window, an earlier failure).
    Skipped,
    /// Nothing changed on the guest (the snapshot failed), or the rollback itself failed.
    Failed,
}

/// A snapshot the operator took, kept for a while after its run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeptSnapshot {
    /// The guest's VMID.
    pub vmid: u32,
    /// The snapshot's name (`homelab-upd-<run>`).
    pub name: String,
    /// RFC 3339.
    pub keep_until: String,
    /// The delete task in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}
