//! The simulated cluster and backup server the BackupPolicy tests run
//! against: PVE storage `pbs1` keeps its backups in the PBS simulator's
//! `store1`, as a real PBS-backed storage does.
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use homelab_operator::{
    api::{self, BackupPolicySpec, BackupPolicyStatus},
    cli::oneshot::MemoryStatus,
    notify::Notifier,
    providers::{pbs::PbsClient, pve::PveClient},
    reconcile::{
        RESYNC, ReconcileError,
        backup_policy::{
            self, Apis, PolicyObject, PolicyOutcome,
            freshness::Member,
            pbs::{ListedSnapshots, SharedSnapshots},
        },
        listings::Listings,
        ownership::Identity,
    },
    sim::{
        SimServer,
        notify::{NotifySim, config_section as notify_section},
        pbs::{PbsSim, PbsSimConfig},
        pve::{PveSim, PveSimConfig, SimBackup, SimGuest, endpoint_for},
    },
};
use serde_json::json;

pub struct World {
    pub sim: Arc<PveSim>,
    pub client: PveClient,
    pub pbs: Arc<PbsSim>,
    pub pbs_client: PbsClient,
    /// Telegram, Discord, … as the policy's `notify` channels reach them.
    pub chat: Arc<NotifySim>,
    pub notifier: Notifier,
    /// The datastore listings the policies share, as in the operator.
    pub snapshots: Listings<ListedSnapshots>,
    pub _servers: (SimServer, SimServer, SimServer),
    pub _dir: tempfile::TempDir,
}

pub async fn world() -> World {
    let sim = PveSim::with_defaults(PveSimConfig {
        task_duration: Duration::ZERO,
        ..Default::default()
    })
    .unwrap();
    let pbs = PbsSim::new(PbsSimConfig {
        task_duration: Duration::ZERO,
        ..Default::default()
    })
    .unwrap();
    sim.attach_pbs("pbs1", pbs.clone(), "store1");
    let server = sim.serve().await.unwrap();
    let pbs_server = pbs.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let chat = NotifySim::new(Default::default());
    let chat_server = chat.serve().await.unwrap();
    let channels = homelab_operator::config::Config::parse("c.yaml", &notify_section(&chat, &chat_server, dir.path()).unwrap())
        .unwrap()
        .notifications;
    let client = PveClient::new(&endpoint_for("default", &sim, &server, dir.path()).unwrap(), None).unwrap();
    let pbs_ep = homelab_operator::sim::pbs::endpoint_for("main", &pbs, &pbs_server, dir.path()).unwrap();
    World {
        sim,
        client,
        pbs_client: PbsClient::new(&pbs_ep, None).unwrap(),
        pbs,
        chat,
        notifier: Notifier::new(channels, None).unwrap(),
        snapshots: Listings::default(),
        _servers: (server, pbs_server, chat_server),
        _dir: dir,
    }
}

pub fn spec(extra: &str) -> BackupPolicySpec {
    serde_yaml_ng::from_str(&format!(
        "selector: {{matchLabels: {{backup: nightly}}}}\nschedule: \"02:30\"\nstorage: pbs1\nretention: {{keepDaily: 7}}\n{extra}"
    ))
    .unwrap()
}

pub fn id() -> Identity {
    Identity::new("homelab", "nightly", Some("0b5e4a1c-1111-4222-8333-444455556666"))
}

pub fn member(name: &str, vmid: u32) -> Member {
    Member {
        name: Some(name.into()),
        vmid,
        node: Some("pve1".into()),
    }
}

/// The annotations a person sets on the policy.
#[derive(Default)]
pub struct Ask<'a> {
    pub backup_now: Option<&'a str>,
    pub restore_test_now: Option<&'a str>,
}

/// One reconcile with both servers; the PBS client only when the spec names one.
pub async fn reconcile(
    w: &World,
    spec: &BackupPolicySpec,
    status: BackupPolicyStatus,
    members: Vec<Member>,
    ask: Ask<'_>,
    sink: &MemoryStatus<BackupPolicyStatus>,
) -> Result<PolicyOutcome, ReconcileError> {
    let id = id();
    let obj = PolicyObject {
        id: &id,
        spec,
        status,
        generation: Some(1),
        members,
        backup_now: ask.backup_now.map(str::to_string),
        restore_test_now: ask.restore_test_now.map(str::to_string),
        created: Some(jiff::Timestamp::now()),
    };
    backup_policy::reconcile(apis(w, spec), obj, sink).await
}

pub fn apis<'a>(w: &'a World, spec: &BackupPolicySpec) -> Apis<'a, PveClient, PbsClient> {
    Apis {
        pve: &w.client,
        pbs: spec.pbs.as_ref().map(|_| &w.pbs_client),
        notifier: Some(&w.notifier),
        snapshots: Some(SharedSnapshots {
            listings: &w.snapshots,
            max_age: RESYNC,
        }),
    }
}

pub async fn run(
    w: &World,
    spec: &BackupPolicySpec,
    status: BackupPolicyStatus,
    members: Vec<Member>,
) -> Result<PolicyOutcome, ReconcileError> {
    reconcile(w, spec, status, members, Ask::default(), &MemoryStatus::default()).await
}

pub fn condition(s: &BackupPolicyStatus, t: &str) -> (String, String, String) {
    let c = api::find_condition(&s.conditions, t).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

pub const HOUR: Duration = Duration::from_secs(3600);

pub fn backup(vmid: u32, age: Duration, verified: Option<&str>) -> SimBackup {
    SimBackup {
        storage: "pbs1".into(),
        vmid,
        kind: "qemu".into(),
        ctime: jiff::Timestamp::now().as_second() as u64 - age.as_secs(),
        size: 8 << 30,
        verified: verified.map(str::to_string),
        protected: false,
        notes: "web01".into(),
        config: Default::default(),
    }
}

pub fn sim_guest(vmid: u32, kind: &str, node: &str, name: &str) -> SimGuest {
    let key = if kind == "lxc" { "hostname" } else { "name" };
    let mut g = SimGuest::new(vmid, kind, node, [(key.to_string(), json!(name))].into(), false);
    g.running = true;
    g
}
