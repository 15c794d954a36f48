//! `BackupPolicy`: which guests are backed up, when, where, for how long; and
//! what the operator found out about each one's newest backup.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::*;

/// A vzdump schedule on Proxmox VE (and, for a PBS datastore, its verify,
/// prune, garbage-collection and sync jobs) for a set of guests.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "homelab.dev",
    version = "v1alpha1",
    kind = "BackupPolicy",
    namespaced,
    status = "BackupPolicyStatus",
    shortname = "bkp",
    category = "homelab",
    cel,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Storage","type":"string","jsonPath":".spec.storage"}"#,
    printcolumn = r#"{"name":"Members","type":"integer","jsonPath":".status.memberCount"}"#,
    printcolumn = r#"{"name":"Fresh","type":"string","jsonPath":".status.fresh"}"#,
    printcolumn = r#"{"name":"Last backup","type":"date","jsonPath":".status.lastBackup"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.selector) || (has(self.vmids) && size(self.vmids) > 0) || (has(self.allGuests) && self.allGuests) || has(self.pool)").message("name the members: selector and/or vmids, or allGuests, or pool"),
    validation = Rule::new("!(has(self.allGuests) && self.allGuests) || (!has(self.selector) && (!has(self.vmids) || size(self.vmids) == 0) && !has(self.pool))").message("allGuests backs up every guest of the cluster: it takes no selector, vmids or pool (leave guests out with exclude)"),
    validation = Rule::new("!has(self.pool) || (!has(self.selector) && (!has(self.vmids) || size(self.vmids) == 0))").message("pool names the members: it takes no selector or vmids"),
    validation = Rule::new("!has(self.exclude) || size(self.exclude) == 0 || (has(self.allGuests) && self.allGuests)").message("exclude only goes with allGuests"),
    validation = Rule::new("!has(self.pbs) || !has(self.pbs.prune) || (has(self.retention) && !(has(self.retention.keepAll) && self.retention.keepAll))").message("pbs.prune prunes with the policy's retention: set retention (keepLast, keepDaily, …), not keepAll"),
    validation = Rule::new("!has(self.maxAge) || !self.maxAge.matches('^(0+[wdhm])+$')").message("maxAge must be above zero (26h, 7d2h)"),
    validation = Rule::new("self.cluster == oldSelf.cluster").message("cluster is immutable")
)]
pub struct BackupPolicySpec {
    /// Proxmox endpoint name in the config's `proxmox:` section.
    #[serde(default = "default_endpoint")]
    #[schemars(length(min = 1, max = 63))]
    pub cluster: String,
    /// ProxmoxGuests in this namespace to back up, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Guests the operator does not manage, by VMID (backing them up changes nothing on them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000), inner(range(min = 100, max = 999999999)))]
    pub vmids: Vec<u32>,
    /// Every guest of the cluster, present and future (vzdump `all`); no selector, vmids or pool with it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub all_guests: bool,
    /// Guests `allGuests` leaves out, by VMID.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000), inner(range(min = 100, max = 999999999)))]
    pub exclude: Vec<u32>,
    /// Every guest of this Proxmox VE resource pool, present and future (vzdump `pool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._\-]*$"))]
    pub pool: Option<String>,
    /// When backups run, as a Proxmox calendar event (`02:30`, `sat 03:00`, `mon..fri 22:00`).
    #[schemars(
        length(min = 1, max = 128),
        regex(
            pattern = r"^(minutely|hourly|daily|weekly|monthly|yearly|annually|quarterly|semiannually|(mon|tue|wed|thu|fri|sat|sun)((\.\.|,)(mon|tue|wed|thu|fri|sat|sun))*( +[0-9*/.,:-]+)*|[0-9*/.,:-]+( +[0-9*/.,:-]+)*)$"
        )
    )]
    pub schedule: String,
    /// PVE storage the backups go to (a PBS datastore storage or a dir/NFS one with `backup` content).
    #[schemars(length(min = 2, max = 63), regex(pattern = r"^[a-zA-Z][a-zA-Z0-9\-_.]*[a-zA-Z0-9]$"))]
    pub storage: String,
    /// vzdump mode: `snapshot` (default, no downtime), `suspend` or `stop`.
    #[serde(default)]
    pub mode: BackupMode,
    /// Compression for file-based storages (PBS always compresses): `zstd` (default), `gzip`, `lzo`, `none`.
    #[serde(default)]
    pub compress: Compression,
    /// Notes attached to each backup; `{{guestname}}`, `{{vmid}}`, `{{node}}`, `{{cluster}}` are expanded; `""` for none.
    #[serde(default = "default_notes")]
    #[schemars(length(max = 1024), regex(pattern = r"^[^\n\r]*$"))]
    pub notes_template: String,
    /// Whether the schedule runs (a disabled policy still reports freshness).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How many backups are kept (PVE `prune-backups`); without it the storage's retention applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// A member whose newest backup is older than this is stale (`26h`, `7d`, `1d12h`).
    #[serde(default = "default_max_age")]
    #[schemars(regex(pattern = r"^([0-9]{1,5}[wdhm])+$"))]
    pub max_age: String,
    /// Proxmox Backup Server jobs for the datastore behind `storage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pbs: Option<PbsOptions>,
    /// Prove the backups restore: restore the newest one to a scratch guest, then destroy it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_test: Option<RestoreTest>,
    /// Notification channels (names in the config's `notifications:` section) for failures, stale and recovered members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(length(min = 1, max = 63)))]
    pub notify: Vec<String>,
    /// `Delete` (default) removes the jobs this policy created; backups themselves are never deleted.
    #[serde(default = "delete_policy")]
    pub deletion_policy: DeletionPolicy,
    /// Take over an existing vzdump job (by its id) instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub adopt_job_id: Option<String>,
    /// `Reconcile` (default), `ObserveOnly` (report, never write) or `Paused`.
    #[serde(default)]
    pub management_mode: ManagementMode,
}

fn default_notes() -> String {
    "{{guestname}}".into()
}

fn default_max_age() -> String {
    "26h".into()
}

fn delete_policy() -> DeletionPolicy {
    DeletionPolicy::Delete
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupMode {
    /// Live backup (QEMU dirty bitmaps, LXC snapshots where the storage can).
    #[default]
    Snapshot,
    /// Suspend the guest for the backup.
    Suspend,
    /// Stop the guest for the backup.
    Stop,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    Lzo,
    None,
}

/// Backups kept per guest, as PVE's `prune-backups` (all unset keeps everything, which is refused
/// unless said with `keepAll`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(
        "(has(self.keepAll) && self.keepAll) || (has(self.keepLast) && self.keepLast > 0) || (has(self.keepHourly) && self.keepHourly > 0) || (has(self.keepDaily) && self.keepDaily > 0) || (has(self.keepWeekly) && self.keepWeekly > 0) || (has(self.keepMonthly) && self.keepMonthly > 0) || (has(self.keepYearly) && self.keepYearly > 0)"
    ).message("keep at least one backup: set one of keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly, keepYearly above 0 (or keepAll: true)"),
    validation = Rule::new(
        "!(has(self.keepAll) && self.keepAll) || !(has(self.keepLast) || has(self.keepHourly) || has(self.keepDaily) || has(self.keepWeekly) || has(self.keepMonthly) || has(self.keepYearly))"
    ).message("keepAll keeps every backup: it takes no other keep option")
)]
pub struct Retention {
    /// Keep every backup (PVE `keep-all`); nothing is pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_all: Option<bool>,
    /// The newest N backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000))]
    pub keep_last: Option<u32>,
    /// The newest backup of each of the last N hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000))]
    pub keep_hourly: Option<u32>,
    /// The newest backup of each of the last N days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000))]
    pub keep_daily: Option<u32>,
    /// The newest backup of each of the last N weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000))]
    pub keep_weekly: Option<u32>,
    /// The newest backup of each of the last N months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000))]
    pub keep_monthly: Option<u32>,
    /// The newest backup of each of the last N years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100000))]
    pub keep_yearly: Option<u32>,
}

/// Jobs on the Proxmox Backup Server that holds the backups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PbsOptions {
    /// Endpoint name in the config's `pbs:` section.
    #[schemars(length(min = 1, max = 63))]
    pub endpoint: String,
    /// Datastore on that server (the one the PVE storage points at).
    #[schemars(length(min = 3, max = 32), regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._\-]*$"))]
    pub datastore: String,
    /// Verify backups on a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<PbsVerify>,
    /// Prune on the server with the policy's retention (instead of PVE pruning after each backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PbsSchedule>,
    /// The datastore's garbage-collection schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garbage_collection: Option<PbsSchedule>,
    /// Copy the backups to (or from) another datastore, e.g. offsite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<PbsSync>,
}

/// A PBS job schedule (a calendar event, as for `schedule`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PbsSchedule {
    /// Calendar event, e.g. `daily`, `sun 04:00`.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PbsVerify {
    /// Calendar event, e.g. `daily`.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// Skip snapshots that verified already (default true).
    #[serde(default = "default_true")]
    pub ignore_verified: bool,
    /// Verify again after this many days (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3650))]
    pub reverify_after_days: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PbsSync {
    /// Remote name configured on the PBS (`proxmox-backup-manager remote list`).
    #[schemars(length(min = 1, max = 32))]
    pub remote: String,
    /// Datastore on the remote.
    #[schemars(length(min = 3, max = 32))]
    pub remote_store: String,
    /// `Pull` (default: this server pulls from the remote) or `Push`.
    #[serde(default)]
    pub direction: SyncDirection,
    /// Calendar event, e.g. `daily`.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum SyncDirection {
    #[default]
    Pull,
    Push,
}

/// Restore the newest backup of a member to a scratch VMID, check it, destroy it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.scratchVmids.first <= self.scratchVmids.last").message("scratchVmids.first must not be above scratchVmids.last"))]
pub struct RestoreTest {
    /// When, in cron syntax as a Kubernetes CronJob (`0 5 * * 0`, `@weekly`).
    #[schemars(regex(
        pattern = r"^(@(yearly|annually|monthly|weekly|daily|hourly)|[0-9*/,-]+ [0-9*/,-]+ [0-9*/,?LW-]+ [0-9A-Za-z*/,-]+ [0-9A-Za-z*/,?L#-]+)$"
    ))]
    pub schedule: String,
    /// VMIDs the scratch guest may use (never one in use).
    pub scratch_vmids: VmidRange,
    /// Storage for the restored disks.
    #[schemars(length(min = 2, max = 63), regex(pattern = r"^[a-zA-Z][a-zA-Z0-9_.-]*[a-zA-Z0-9]$"))]
    pub storage: String,
    /// Node to restore on.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$"))]
    pub node: String,
    /// Start the restored guest and wait until it runs (default true).
    #[serde(default = "default_true")]
    pub start: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmidRange {
    /// Lowest VMID.
    #[schemars(range(min = 100, max = 999999999))]
    pub first: u32,
    /// Highest VMID.
    #[schemars(range(min = 100, max = 999999999))]
    pub last: u32,
}

/// What the operator observed, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicyStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The PVE vzdump job (`/cluster/backup/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// The members resolved from selector and vmids, each with its newest backup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<BackupMember>,
    /// How many members there are.
    #[serde(default)]
    pub member_count: u32,
    /// Fresh members out of all (`3/4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh: Option<String>,
    /// Time of the newest backup of any member (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<String>,
    /// The newest "back up now" run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<BackupRun>,
    /// The newest scheduled run of the job, followed through the nodes' task lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_run: Option<BackupRun>,
    /// When the schedule runs next (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// The Proxmox Backup Server jobs of this policy and how they last ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pbs_jobs: Vec<PbsJobState>,
    /// What was last notified (kept so a restarted operator does not alert again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<PolicyNotification>,
    /// The newest restore test (kept across restarts: a scratch guest is always destroyed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restore_test: Option<RestoreTestRun>,
    /// Ready, Reconciling, Degraded, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupMember {
    /// ProxmoxGuest name (unset for a member named by VMID only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its VMID.
    pub vmid: u32,
    /// Node it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Its newest backup on the policy's storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<BackupRef>,
    /// Whether the newest backup is younger than `maxAge`.
    #[serde(default)]
    pub fresh: bool,
    /// When the policy first counted it as a member: until a run that started later has ended,
    /// a member without a backup waits for its first one rather than being stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRef {
    /// Volume id (`pbs1:backup/vm/100/2026-12-02T02:30:00Z`).
    pub volid: String,
    /// When it was taken (RFC 3339).
    pub time: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: u64,
    /// PBS verification state (`ok`, `failed`; unset when not verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    /// Protected from pruning.
    #[serde(default, skip_serializing_if = "is_false")]
    pub protected: bool,
}

/// A run of vzdump: one task per node that has members ("back up now", or the schedule).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRun {
    /// The `homelab.dev/backup-now` value that asked for it (each value runs once), or `schedule <time>`.
    pub request: String,
    /// Start (RFC 3339).
    pub started: String,
    /// The vzdump tasks, per node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<RunTask>,
    /// End (RFC 3339), unset while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// `OK`, or how many guests failed; unset while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Guests whose backup failed, with the error line of the task log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedGuest>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunTask {
    /// Node the task runs on.
    pub node: String,
    /// The task (`UPID:…:vzdump:…`).
    pub upid: String,
    /// Its exit status once it ended (`OK`, `job errors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedGuest {
    /// VMID of the guest.
    pub vmid: u32,
    /// The error line from the task log.
    pub error: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PbsJobState {
    /// `prune`, `verify`, `sync` or `garbage-collection`.
    pub kind: String,
    /// The job id on the server (the datastore for garbage collection).
    pub id: String,
    /// Its calendar event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// `ok`, or the error of the last run; unset before the first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_state: Option<String>,
    /// End of the last run (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// Next run (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
}

/// A restore test: the newest backup of a member restored to a scratch VMID, started, destroyed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTestRun {
    /// What started it: the scheduled time, or the `homelab.dev/restore-test-now` value.
    pub request: String,
    /// The backup restored (volume id).
    pub backup: String,
    /// The member it belongs to (name, or `VMID n`).
    pub guest: String,
    /// The scratch guest's VMID.
    pub scratch_vmid: u32,
    /// Node it was restored on.
    pub node: String,
    /// `Restoring`, `Starting`, `Destroying` or `Done`.
    pub phase: String,
    /// The task in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upid: Option<String>,
    /// Start (RFC 3339).
    pub started: String,
    /// `OK`, or what failed; unset while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// End (RFC 3339), once the scratch guest is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Seconds from start to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u64>,
    /// The newest `homelab.dev/restore-test-now` value acted on (each value runs once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_request: Option<String>,
}

/// The problem the `notify` channels were last told about, and how each send went.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyNotification {
    /// `Reason: message` of the Degraded condition notified; unset once recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// When the problem was first notified (RFC 3339), for the recovery's duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// When the last message went out (RFC 3339).
    pub at: String,
    /// `failure` or `recovery`.
    pub event: String,
    /// Each channel's outcome: `sent`, or the error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelOutcome>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelOutcome {
    /// Channel name in the config's `notifications:` section.
    pub channel: String,
    /// `sent`, or why not.
    pub outcome: String,
}
