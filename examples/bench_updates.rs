//! Benchmark: an UpdatePolicy in `Check` mode over N QEMU guests on 3
//! simulated nodes (their agents answer the probe and the package listing),
//! then the steady state between runs.
//!
//!     cargo run --release --example bench_updates -- [GUESTS] [LATENCY_MS] [RESYNCS]
//!
//! Reports the time and outside calls of the check run, the outside calls and
//! status writes of each steady-state resync, and peak RSS of the whole
//! process (operator and simulator).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use homelab_operator::{
    api::{ProxmoxGuest, UpdatePolicy, UpdatePolicyStatus, UpdateResult},
    cli::oneshot::{Engine, Files},
    config::Config,
    metrics::Metrics,
    reconcile::{StatusSink, kind::Kind},
    sim::pve::{PveSim, PveSimConfig, SimGuest, endpoint_for},
};
use serde_json::json;

/// Counts the status writes a controller would send (only those that change something).
#[derive(Default)]
struct CountingSink {
    last: std::sync::Mutex<Option<serde_json::Value>>,
    writes: AtomicU64,
}

impl StatusSink<UpdatePolicyStatus> for CountingSink {
    fn save<'a>(&'a self, s: &'a UpdatePolicyStatus) -> BoxFuture<'a, Result<(), String>> {
        let v = serde_json::to_value(s).ok();
        let mut last = self.last.lock().unwrap();
        if *last != v {
            self.writes.fetch_add(1, Ordering::Relaxed);
            *last = v;
        }
        Box::pin(async { Ok(()) })
    }
}

fn guests(sim: &PveSim, n: u32) -> Vec<ProxmoxGuest> {
    let nodes = ["pve1", "pve2", "pve3"];
    (0..n)
        .map(|i| {
            let vmid = 1000 + i;
            let node = nodes[i as usize % 3];
            let config = [("name", json!(format!("vm{i:04}"))), ("agent", json!("1"))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let mut g = SimGuest::new(vmid, "qemu", node, config, false);
            g.running = true;
            sim.add_guest(g);
            serde_json::from_value(json!({
                "apiVersion": "homelab.dev/v1alpha1", "kind": "ProxmoxGuest",
                "metadata": {"name": format!("vm{i:04}"), "namespace": "bench", "labels": {"updates": "weekly"}},
                "spec": {"type": "qemu", "memoryMiB": 1024, "source": {"clone": {"templateName": "t"}}, "adopt": true, "vmid": vmid},
                "status": {"vmid": vmid, "node": node},
            }))
            .expect("a guest")
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = *args.first().unwrap_or(&200) as u32;
    let latency = Duration::from_millis(*args.get(1).unwrap_or(&20));
    let resyncs = *args.get(2).unwrap_or(&5);
    let sim = PveSim::with_defaults(PveSimConfig::default()).map_err(anyhow::Error::msg)?;
    let members = guests(&sim, n);
    sim.faults.lock().unwrap().latency = latency;
    let server = sim.serve().await?;
    let dir = tempfile::tempdir()?;
    let config = Config {
        proxmox: [("default".to_string(), endpoint_for("default", &sim, &server, dir.path())?)].into(),
        ..Default::default()
    };
    let engine = Engine::new(&config, Arc::new(Metrics::default()))?;
    let files = Files::new(&members, &[]);
    let mut policy: UpdatePolicy = serde_json::from_value(json!({
        "apiVersion": "homelab.dev/v1alpha1", "kind": "UpdatePolicy",
        "metadata": {"name": "weekly", "namespace": "bench", "annotations": {"homelab.dev/update-now": "bench"}},
        "spec": {"selector": {"matchLabels": {"updates": "weekly"}}, "mode": "Check", "schedule": "0 4 * * 0"},
    }))?;

    let started = Instant::now();
    let out = engine.apply(&policy, &files, Duration::from_secs(600), &|_| {}).await;
    let took = started.elapsed();
    anyhow::ensure!(out.error.is_none(), "check run failed: {:?}", out.error);
    let checked = out
        .status
        .members
        .iter()
        .filter(|m| m.last_run.as_ref().and_then(|r| r.result) == Some(UpdateResult::Checked))
        .count();
    println!(
        "check run over {n} guests ({} ms per call): {:.2} s, {checked} checked, {} pending in all, {} outside calls ({:.1} per guest)",
        latency.as_millis(),
        took.as_secs_f64(),
        out.status.pending,
        sim.total_calls(),
        sim.total_calls() as f64 / n as f64
    );
    for (endpoint, count) in sim.calls() {
        println!("  {count:>6}  {endpoint}");
    }

    // Between runs: each resync as the controller does it, from the written status.
    policy.status = Some(out.status);
    sim.reset_calls();
    let sink = CountingSink::default();
    *sink.last.lock().unwrap() = serde_json::to_value(policy.status.as_ref()).ok();
    let env = engine.env();
    let mut requeue = Duration::ZERO;
    for _ in 0..resyncs {
        let inputs = policy.resolve(env, &files).await?;
        let out = policy.reconcile(env, inputs, &sink).await?;
        requeue = out.requeue;
        sink.save(&out.status).await.map_err(anyhow::Error::msg)?;
        policy.status = Some(out.status);
    }
    println!(
        "steady state: {resyncs} resyncs, {} outside calls, {} status writes; next look in {} s",
        sim.total_calls(),
        sink.writes.load(Ordering::Relaxed),
        requeue.as_secs()
    );
    println!("peak RSS: {:.1} MiB", homelab_operator::metrics::peak_rss_mib());
    Ok(())
}
