//! The simulated cluster the ProxmoxGuest end-to-end tests run against, and
//! the helpers they share.
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use homelab_operator::{
    api::{self, ProxmoxGuest, ProxmoxGuestStatus},
    cli::{
        oneshot::{self, Engine, Files, MemoryStatus},
        resources,
    },
    config::Config,
    metrics::Metrics,
    reconcile::ownership::Identity,
    reconcile::{
        cache::DriftClock,
        proxmox_guest::{self, CleanupOutcome, GuestCtx, GuestObject},
    },
    sim::{
        SimServer,
        pve::{PveSim, PveSimConfig, SimGuest, endpoint_for},
    },
};

pub struct World {
    pub sim: Arc<PveSim>,
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    pub _server: SimServer,
    pub _dir: tempfile::TempDir,
}

pub async fn world() -> World {
    world_with(Duration::ZERO, None).await
}

/// A world whose QEMU agents start `agent_delay` after boot; the operator
/// waits `grace` (default: as long as the agents take).
pub async fn world_with(agent_delay: Duration, grace: Option<Duration>) -> World {
    let sim = PveSim::with_defaults(PveSimConfig {
        // Tasks finish at the next look: how many reconciles convergence takes
        // depends on the logic only, never on the machine's load.
        task_duration: Duration::ZERO,
        agent_delay,
        ..Default::default()
    })
    .unwrap();
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut ep = endpoint_for("default", &sim, &server, dir.path()).unwrap();
    ep.agent_boot_grace = grace.unwrap_or(ep.agent_boot_grace);
    let config = Config {
        path: "test".into(),
        proxmox: [("default".to_string(), ep)].into(),
        ..Default::default()
    };
    let metrics = Arc::new(Metrics::default());
    let mut engine = Engine::new(&config, metrics.clone()).unwrap();
    // Tests want every reconcile to read the config (drift checks always due).
    engine.drift = DriftClock::new(Duration::ZERO);
    World {
        sim,
        engine,
        metrics,
        config,
        _server: server,
        _dir: dir,
    }
}

pub fn examples() -> Vec<ProxmoxGuest> {
    resources::load(&[std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples")])
        .unwrap()
        .guests
}

pub fn example(name: &str) -> ProxmoxGuest {
    examples().into_iter().find(|g| g.metadata.name.as_deref() == Some(name)).unwrap()
}

pub async fn apply(w: &World, g: &ProxmoxGuest) -> oneshot::Applied {
    w.engine.apply(g, &Files::default(), Duration::from_secs(30), &|_| {}).await
}

pub fn ready(s: &ProxmoxGuestStatus) -> bool {
    api::find_condition(&s.conditions, api::CONDITION_READY).is_some_and(|c| c.status == "True")
}

pub fn cfg(g: &SimGuest, key: &str) -> String {
    g.get(key).unwrap_or_default()
}

pub async fn delete(w: &World, g: &ProxmoxGuest, status: ProxmoxGuestStatus) -> Result<Vec<String>, String> {
    let ctx = GuestCtx::new(w.engine.env(), "default").unwrap();
    let id = Identity::of(g);
    let sink = MemoryStatus::default();
    *sink.0.lock().unwrap() = status;
    for _ in 0..1000 {
        let status = sink.0.lock().unwrap().clone();
        let obj = GuestObject {
            id: &id,
            spec: &g.spec,
            status,
            generation: Some(1),
            ci_password: None,
        };
        match proxmox_guest::cleanup(&ctx, obj, &sink).await.map_err(|e| e.to_string())? {
            CleanupOutcome::Done(ev) => {
                return Ok(ev.into_iter().map(|e| e.reason.to_string()).collect());
            }
            CleanupOutcome::Requeue { status, .. } => {
                *sink.0.lock().unwrap() = status;
            }
            CleanupOutcome::Blocked { status, .. } => {
                return Err(api::find_condition(&status.conditions, api::CONDITION_STALLED)
                    .unwrap()
                    .message
                    .clone());
            }
        }
    }
    Err("cleanup did not finish".into())
}
