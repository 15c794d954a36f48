//! Benchmark: one BackupPolicy over N guests on 3 simulated nodes, its storage
//! backed by the PBS simulator: a "back up now" of all of them, then
//! steady-state resyncs.
//!
//!     cargo run --release --example bench_backups -- [GUESTS] [LATENCY_MS]
//!
//! Reports outside calls per steady-state resync (PVE and PBS), the time of a
//! resync, and peak RSS of the whole process (operator and both simulators).

use std::time::{Duration, Instant};

use homelab_operator::{
    api::BackupPolicy,
    cli::oneshot::MemoryStatus,
    providers::{pbs::PbsClient, pve::PveClient},
    reconcile::{
        POLL_TASK,
        backup_policy::{self, Apis, PolicyObject, freshness::Member},
        ownership::Identity as GuestIdentity,
    },
    sim::{
        pbs::{PbsSim, PbsSimConfig},
        pve::{PveSim, PveSimConfig, SimGuest, endpoint_for},
    },
};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = *args.first().unwrap_or(&1000) as u32;
    let latency = Duration::from_millis(*args.get(1).unwrap_or(&20));
    let sim = PveSim::with_defaults(PveSimConfig {
        task_duration: Duration::from_millis(200),
        ..Default::default()
    })
    .map_err(anyhow::Error::msg)?;
    let pbs = PbsSim::new(PbsSimConfig::default()).map_err(anyhow::Error::msg)?;
    sim.attach_pbs("pbs1", pbs.clone(), "store1");
    sim.faults.lock().unwrap().latency = latency;
    pbs.faults.lock().unwrap().latency = latency;
    let nodes = ["pve1", "pve2", "pve3"];
    let members: Vec<Member> = (0..n)
        .map(|i| {
            let vmid = 1000 + i;
            let node = nodes[i as usize % 3];
            let mut g = SimGuest::new(
                vmid,
                "lxc",
                node,
                [("hostname".to_string(), json!(format!("ct{i:04}")))].into(),
                false,
            );
            g.running = true;
            sim.add_guest(g);
            Member {
                name: None,
                vmid,
                node: Some(node.into()),
            }
        })
        .collect();
    let (server, pbs_server) = (sim.serve().await?, pbs.serve().await?);
    let dir = tempfile::tempdir()?;
    let pve = PveClient::new(&endpoint_for("default", &sim, &server, dir.path())?, None)?;
    let pbs_client = PbsClient::new(
        &homelab_operator::sim::pbs::endpoint_for("main", &pbs, &pbs_server, dir.path())?,
        None,
    )?;
    let vmids: Vec<String> = members.iter().map(|m| m.vmid.to_string()).collect();
    let mut policy: BackupPolicy = serde_yaml_ng::from_str(&format!(
        "apiVersion: homelab.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: bench, namespace: bench, uid: 6c1d0b9e-0000-4000-8000-000000000001}}\n\
         spec:\n  vmids: [{}]\n  schedule: '02:30'\n  storage: pbs1\n  retention: {{keepDaily: 7}}\n\
         \x20 pbs: {{endpoint: main, datastore: store1, prune: {{schedule: daily}}, verify: {{schedule: daily}}, garbageCollection: {{schedule: sun}}}}\n",
        vmids.join(", ")
    ))?;
    policy.metadata.annotations = Some([("homelab.dev/backup-now".to_string(), "bench".to_string())].into());
    let id = GuestIdentity::new("bench", "bench", policy.metadata.uid.as_deref());
    let sink = MemoryStatus::default();
    let once = |status| {
        let mut p = policy.clone();
        p.status = Some(status);
        let members = members.clone();
        let (pve, pbs_client, id, sink) = (&pve, &pbs_client, &id, &sink);
        async move {
            let apis = Apis {
                pve,
                pbs: Some(pbs_client),
                notifier: None,
                snapshots: None,
            };
            backup_policy::reconcile(apis, PolicyObject::of(&p, id, members), sink).await
        }
    };
    println!("one policy over {n} LXC guests on 3 nodes, PBS-backed storage, {latency:?} per API call");
    let start = Instant::now();
    let mut out = once(Default::default()).await?;
    while out.requeue == POLL_TASK {
        tokio::time::sleep(Duration::from_millis(200)).await;
        out = once(out.status).await?;
    }
    println!(
        "back up now:               {} of {n} fresh in {:.1} s",
        out.status.fresh.clone().unwrap_or_default(),
        start.elapsed().as_secs_f64()
    );
    let mut times = vec![];
    let mut calls = (0, 0);
    for _ in 0..5 {
        sim.reset_calls();
        let pbs_before = pbs.total_calls();
        let t = Instant::now();
        out = once(out.status).await?;
        times.push(t.elapsed().as_secs_f64());
        calls = (sim.total_calls(), pbs.total_calls() - pbs_before);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "steady-state resync:       {} PVE + {} PBS calls for {n} members, {:.3} s median of 5",
        calls.0, calls.1, times[2]
    );
    println!("peak RSS (operator+sims):  {:.1} MiB", homelab_operator::metrics::peak_rss_mib());
    Ok(())
}
