//! Benchmark: `export` of N hand-made guests (half VMs, half containers, as
//! the web UI makes them) and a vzdump job per 50 of them from the simulator,
//! with API latency.
//!
//!     cargo run --release --example bench_export -- [GUESTS] [LATENCY_MS]
//!
//! Reports the time, the outside calls (per guest and by endpoint) and the
//! peak RSS of the whole process (operator and simulator together).

use std::{collections::BTreeMap, time::Instant};

use homelab_operator::{
    cli::export::{ExportArgs, run},
    config::ConfigArg,
    metrics::peak_rss_mib,
    sim::pve::{PveSim, PveSimConfig, SimGuest, config_section},
};
use serde_json::{Value, json};

fn guest(vmid: u32) -> SimGuest {
    let node = ["pve1", "pve2", "pve3"][vmid as usize % 3];
    let mac = format!("BC:24:11:{:02X}:{:02X}:01", vmid >> 8, vmid & 0xff);
    let config: BTreeMap<String, Value> = if vmid.is_multiple_of(2) {
        BTreeMap::from([
            ("name".into(), json!(format!("vm{vmid}"))),
            ("memory".into(), json!(2048)),
            ("cores".into(), json!(2)),
            ("scsihw".into(), json!("virtio-scsi-single")),
            ("scsi0".into(), json!(format!("local-lvm:vm-{vmid}-disk-0,iothread=1,size=32G"))),
            ("ide2".into(), json!("none,media=cdrom")),
            ("net0".into(), json!(format!("virtio={mac},bridge=vmbr0,firewall=1"))),
            ("ostype".into(), json!("l26")),
            ("tags".into(), json!("bench")),
        ])
    } else {
        BTreeMap::from([
            ("hostname".into(), json!(format!("ct{vmid}"))),
            ("memory".into(), json!(512)),
            ("swap".into(), json!(512)),
            ("cores".into(), json!(1)),
            ("rootfs".into(), json!(format!("local-lvm:subvol-{vmid}-disk-0,size=8G"))),
            ("net0".into(), json!(format!("name=eth0,bridge=vmbr0,hwaddr={mac},ip=dhcp"))),
            ("unprivileged".into(), json!(1)),
            ("ostype".into(), json!("debian")),
        ])
    };
    let kind = if vmid.is_multiple_of(2) { "qemu" } else { "lxc" };
    SimGuest::new(vmid, kind, node, config, false)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = *args.first().unwrap_or(&500) as u32;
    let latency = std::time::Duration::from_millis(*args.get(1).unwrap_or(&20));
    let sim = PveSim::with_defaults(PveSimConfig::default()).map_err(anyhow::Error::msg)?;
    for vmid in 100..100 + n {
        sim.add_guest(guest(vmid));
    }
    // A nightly vzdump job per 50 guests, as people group them.
    for (j, first) in (100..100 + n).step_by(50).enumerate() {
        let vmids: Vec<String> = (first..(first + 50).min(100 + n)).map(|v| v.to_string()).collect();
        sim.add_backup_job(
            &format!("backup-bench-{j:04}"),
            json!({"schedule": "01:00", "storage": "local", "vmid": vmids.join(","), "compress": "zstd",
                "prune-backups": "keep-last=7", "comment": format!("rack {j}")}),
        );
    }
    sim.faults.lock().unwrap().latency = latency;
    let server = sim.serve().await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, config_section(&sim, &server, dir.path())?)?;
    let export = |dry_run: bool| ExportArgs {
        config: ConfigArg { config: config.clone() },
        namespace: "homelab".into(),
        out: dir.path().join("out"),
        cluster: None,
        vmid: vec![],
        node: None,
        tag: None,
        pool: None,
        name: None,
        zone: vec![],
        dry_run,
    };
    println!("exporting {n} guests (half VMs, half containers), {latency:?} per API call");
    let started = Instant::now();
    let code = run(export(false)).await?;
    let took = started.elapsed();
    let calls = sim.total_calls();
    println!(
        "\nexported:                 {n} guests in {:.2} s (exit {code})",
        took.as_secs_f64()
    );
    println!("outside calls:            {calls} ({:.1} per guest)", calls as f64 / n as f64);
    for (endpoint, count) in sim.calls() {
        println!("  {count:>8}  {endpoint}");
    }
    let files = std::fs::read_dir(dir.path().join("out/default/guests"))?.count();
    println!("files written:            {files}");
    println!("peak RSS (operator+sim):  {:.1} MiB", peak_rss_mib());
    Ok(())
}
