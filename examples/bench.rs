//! Benchmark: converge N guests over 3 simulated nodes with API latency and
//! task durations, then measure a steady-state resync.
//!
//!     cargo run --release --example bench -- [GUESTS] [LATENCY_MS] [TASK_MS] [CONCURRENCY]
//!
//! Reports convergence time, outside calls per created guest, outside calls
//! per steady-state resync, and peak RSS of the whole process (operator and
//! simulator together: an upper bound for the operator alone).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use homelab_operator::{
    api::{self, ProxmoxGuest},
    cli::oneshot::{Engine, Files},
    config::Config,
    metrics::Metrics,
    reconcile::ownership::Identity,
    sim::pve::{PveSim, PveSimConfig, endpoint_for},
};

fn guest(i: usize) -> ProxmoxGuest {
    let yaml = format!(
        r#"
apiVersion: homelab.dev/v1alpha1
kind: ProxmoxGuest
metadata: {{name: ct{i:04}, namespace: bench}}
spec:
  type: lxc
  name: ct{i:04}
  source: {{osTemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"}}
  memoryMiB: 256
  disks: [{{slot: rootfs, storage: local-lvm, sizeGiB: 4}}]
  network: [{{slot: net0, bridge: vmbr0, ipv4: dhcp}}]
  tags: [bench]
"#
    );
    serde_yaml_ng::from_str(&yaml).expect("bench guest")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = *args.first().unwrap_or(&1000);
    let latency = Duration::from_millis(*args.get(1).unwrap_or(&20) as u64);
    let task = Duration::from_millis(*args.get(2).unwrap_or(&500) as u64);
    let concurrency = *args.get(3).unwrap_or(&64);

    let sim = PveSim::with_defaults(PveSimConfig {
        task_duration: task,
        ..Default::default()
    })
    .map_err(anyhow::Error::msg)?;
    sim.faults.lock().unwrap().latency = latency;
    let server = sim.serve().await?;
    let dir = tempfile::tempdir()?;
    let ep = endpoint_for("default", &sim, &server, dir.path())?;
    let config = Config {
        path: "bench".into(),
        proxmox: [("default".to_string(), ep)].into(),
        ..Default::default()
    };
    let metrics = Arc::new(Metrics::default());
    let engine = Engine::new(&config, metrics.clone())?;
    let guests: Vec<ProxmoxGuest> = (0..n).map(guest).collect();

    println!("converging {n} LXC guests over 3 nodes, {latency:?} per API call, {task:?} per task, {concurrency} at once");
    let start = Instant::now();
    let results = engine
        .apply_all(&guests, &Files::default(), concurrency, Duration::from_secs(1800), &|_| {})
        .await;
    let converge = start.elapsed();
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    let create_calls = sim.total_calls();
    let breakdown = sim.calls();
    let mut by_node = std::collections::BTreeMap::new();
    for g in sim.guests() {
        *by_node.entry(g.node).or_insert(0) += 1;
    }

    // Steady state: every guest reconciled once more, Ready, drift check not due.
    let settled: Vec<ProxmoxGuest> = guests
        .iter()
        .zip(&results)
        .map(|(g, r)| {
            let mut g = g.clone();
            g.status = Some(r.status.clone());
            engine.drift.mark_read(&Identity::of(&g).uid);
            g
        })
        .collect();
    // Let the shared snapshot expire so the resync pays for its own observation.
    tokio::time::sleep(Duration::from_secs(11)).await;
    sim.reset_calls();
    let resync_start = Instant::now();
    let resync = engine
        .apply_all(&settled, &Files::default(), concurrency, Duration::from_secs(600), &|_| {})
        .await;
    let resync_time = resync_start.elapsed();
    let resync_calls = sim.total_calls();
    let ready = resync
        .iter()
        .filter(|r| api::find_condition(&r.status.conditions, "Ready").is_some_and(|c| c.status == "True"))
        .count();

    println!(
        "converged:                 {} of {n} in {:.1} s ({failed} failed)",
        n - failed,
        converge.as_secs_f64()
    );
    println!("placement:                 {by_node:?}");
    println!(
        "outside calls to converge: {create_calls} ({:.1} per created guest)",
        create_calls as f64 / n as f64
    );
    for (op, count) in &breakdown {
        println!("    {count:>7}  {op}");
    }
    println!(
        "steady-state resync:       {resync_calls} calls for {n} guests in {:.2} s ({ready} Ready)",
        resync_time.as_secs_f64()
    );
    println!("peak RSS (operator+sim):   {:.1} MiB", homelab_operator::metrics::peak_rss_mib());
    Ok(())
}
