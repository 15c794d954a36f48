//! Moving in: guests made by hand (through the API, the way the web UI makes
//! them) are exported with `adopt: true`; `plan` over the export changes
//! nothing but the ownership marks (exit 0), `apply` writes only those marks,
//! and the next `plan` has nothing left at all.

mod support {
    pub mod debian;
    pub mod dns_servers;
    pub mod guest_world;
}

use std::{path::Path, time::Duration};

use homelab_operator::{
    providers::pve::{GuestKind, PveApi, client::wait_task},
    sim::{
        npm::NpmSim,
        pve::config_section,
        technitium::{SimRecord, TechnitiumSim},
    },
};
use serde_json::json;
use support::{dns_servers, guest_world::world};

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A VM and a container as a person makes them in the web UI: several NICs
/// (one MAC picked by Proxmox), a CD-ROM, bind mounts, tags, a description.
async fn hand_made_guests<P: PveApi>(api: &P) {
    let vm = params(&[
        ("vmid", "120"),
        ("name", "web"),
        ("description", "nginx for the family photos"),
        ("tags", "prod;web"),
        ("onboot", "1"),
        ("memory", "4096"),
        ("cores", "2"),
        ("sockets", "1"),
        ("cpu", "x86-64-v2-AES"),
        ("ostype", "l26"),
        ("scsihw", "virtio-scsi-single"),
        ("scsi0", "local-lvm:32,iothread=1,discard=on,ssd=1"),
        ("ide2", "local:iso/debian-13.1.0-amd64-netinst.iso,media=cdrom"),
        ("net0", "virtio,bridge=vmbr0,firewall=1"),
        ("net1", "e1000,bridge=vmbr1,tag=20"),
    ]);
    let ct = params(&[
        ("vmid", "121"),
        ("hostname", "jellyfin"),
        ("ostemplate", "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
        ("memory", "2048"),
        ("swap", "512"),
        ("cores", "2"),
        ("unprivileged", "1"),
        ("features", "nesting=1"),
        ("rootfs", "local-lvm:8"),
        ("mp0", "/tank/media,mp=/media,ro=1"),
        ("net0", "name=eth0,bridge=vmbr0,ip=10.0.0.50/24,gw=10.0.0.1"),
        ("net1", "name=eth1,bridge=vmbr1,ip=dhcp"),
    ]);
    for (node, kind, p) in [("pve1", GuestKind::Qemu, vm), ("pve2", GuestKind::Lxc, ct)] {
        let upid = api.create(node, kind, p).await.unwrap();
        wait_task(api, &upid, Duration::from_millis(10), Duration::from_secs(10))
            .await
            .unwrap();
    }
    let upid = api.power("pve2", GuestKind::Lxc, 121, "start").await.unwrap();
    wait_task(api, &upid, Duration::from_millis(10), Duration::from_secs(10))
        .await
        .unwrap();
    // A snapshot taken before an upgrade, as people keep them.
    let upid = api.snapshot("pve1", GuestKind::Qemu, 120, "pre_upgrade").await.unwrap();
    wait_task(api, &upid, Duration::from_millis(10), Duration::from_secs(10))
        .await
        .unwrap();
}

/// Two vzdump jobs as the web UI makes them, run once (the guests have backups):
/// one for both guests with its own words in the comment, one for every guest
/// but the container, with options the spec has no field for.
async fn hand_made_jobs<P: PveApi>(api: &P, sim: &homelab_operator::sim::pve::PveSim) {
    let nightly = params(&[
        ("vmid", "120,121"),
        ("storage", "local"),
        ("schedule", "21:00"),
        ("mode", "snapshot"),
        ("compress", "zstd"),
        ("notes-template", "{{guestname}}"),
        ("prune-backups", "keep-last=7"),
        ("enabled", "1"),
        ("all", "0"),
        ("comment", "Nightly, to local"),
    ]);
    let weekly = params(&[
        ("all", "1"),
        ("exclude", "121"),
        ("storage", "pbs1"),
        ("schedule", "sat 03:00"),
        ("mode", "stop"),
        ("prune-backups", "keep-last=3,keep-weekly=2"),
        ("mailnotification", "failure"),
        ("node", "pve1"),
    ]);
    for p in [nightly, weekly] {
        api.create_backup_job(p).await.unwrap();
    }
    for job in api.backup_jobs().await.unwrap() {
        for upid in sim.run_backup_job(&job.id).unwrap() {
            let upid = homelab_operator::providers::pve::Upid::parse(&upid).unwrap();
            wait_task(api, &upid, Duration::from_millis(10), Duration::from_secs(10))
                .await
                .unwrap();
        }
    }
}

/// Two proxy hosts as a person makes them in the NPM UI.
fn hand_made_hosts(npm: &NpmSim) {
    let host = |domains: &[&str], host: &str, port: u16, extra: serde_json::Value| {
        let mut h = json!({
            "domain_names": domains, "forward_scheme": "http", "forward_host": host, "forward_port": port,
            "access_list_id": 0, "certificate_id": 0, "ssl_forced": false, "caching_enabled": false,
            "block_exploits": true, "advanced_config": "", "meta": {"letsencrypt_agree": false, "dns_challenge": false},
            "allow_websocket_upgrade": false, "http2_support": false, "hsts_enabled": false, "enabled": true, "locations": []
        });
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        npm.add_host(h);
    };
    host(&["photos.home.arpa"], "10.0.0.20", 2342, json!({"allow_websocket_upgrade": true}));
    host(
        &["git.home.arpa", "code.home.arpa"],
        "10.0.0.21",
        3000,
        json!({"advanced_config": "client_max_body_size 0;"}),
    );
}

/// A zone kept by hand: an address, a CNAME, mail and SPF at the apex.
fn hand_made_records(dns: &TechnitiumSim) {
    let rec = |name: &str, rtype: &str, rdata: serde_json::Value| SimRecord {
        name: name.into(),
        rtype: rtype.into(),
        ttl: 3600,
        comments: None,
        rdata,
    };
    dns.add_record("home.arpa", rec("nas.home.arpa", "A", json!({"ipAddress": "10.0.0.5"})));
    dns.add_record("home.arpa", rec("files.home.arpa", "CNAME", json!({"cname": "nas.home.arpa"})));
    dns.add_record(
        "home.arpa",
        rec("home.arpa", "MX", json!({"preference": 10, "exchange": "mail.home.arpa"})),
    );
    dns.add_record("home.arpa", rec("home.arpa", "TXT", json!({"text": "v=spf1 -all"})));
}

/// The command, off the runtime that serves the simulator.
async fn run(args: &[&str], config: &Path) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_homelab-operator"));
    cmd.args(args).arg("--config").arg(config);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[tokio::test]
async fn export_then_plan_changes_nothing_and_apply_writes_only_the_marks() {
    let w = world().await;
    hand_made_guests(&w.engine.providers.pve["default"]).await;
    // A disk detached in the web UI stays as an unused volume.
    w.sim.edit_config(120, "unused0", json!("local-lvm:vm-120-disk-9"));
    hand_made_jobs(&w.engine.providers.pve["default"], &w.sim).await;
    let npm = NpmSim::new("admin@example.com", "s3cret-pass").unwrap();
    let npm_server = npm.serve().await.unwrap();
    hand_made_hosts(&npm);
    let dns = TechnitiumSim::new("dns-token-0123456789abcdef", &["home.arpa"]).unwrap();
    let dns_server = dns.serve().await.unwrap();
    hand_made_records(&dns);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("npm-secret"), "s3cret-pass").unwrap();
    std::fs::write(dir.path().join("dns-token"), "dns-token-0123456789abcdef").unwrap();
    let proxy = format!(
        "proxy:\n  default:\n    type: nginx-proxy-manager\n    url: {}\n    identity: admin@example.com\n    secretFile: {}\n",
        npm_server.url,
        dir.path().join("npm-secret").display()
    );
    let dns_section = format!(
        "dns:\n  default:\n    type: technitium\n    url: {}\n    tokenFile: {}\n",
        dns_server.url,
        dir.path().join("dns-token").display()
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        config_section(&w.sim, &w._server, dir.path()).unwrap() + &proxy + &dns_section,
    )
    .unwrap();
    let out = dir.path().join("homelab");
    let out_arg = out.to_str().unwrap();

    // A dry run writes nothing.
    let export = ["export", "--namespace", "homelab", "--out", out_arg, "--zone", "home.arpa"];
    let (code, text) = run(&[&export[..], &["--dry-run"]].concat(), &config).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("Export: 2 guests, 2 backup jobs, 2 proxy hosts, 4 DNS records") && text.contains("dry run"),
        "{text}"
    );
    assert!(!out.exists());

    let (code, text) = run(&export, &config).await;
    assert_eq!(code, Some(0), "{text}");
    let web = std::fs::read_to_string(out.join("default/guests/web.yaml")).unwrap();
    assert!(web.contains("adopt: true") && web.contains("vmid: 120"), "{web}");
    // What the spec cannot say is named at the top, not dropped.
    assert!(
        web.starts_with("# Exported by homelab-operator")
            && web.contains("#   ide2: ")
            && web.contains("#   scsihw: ")
            && web.contains("#   unused0: local-lvm:vm-120-disk-9"),
        "{web}"
    );
    assert!(text.contains("not expressed, kept as it is: ide2"), "{text}");
    // Each job a policy adopting it; the guests of the nightly one picked by a label on them.
    let nightly = std::fs::read_to_string(out.join("default/backups/nightly-to-local.yaml")).unwrap();
    assert!(
        nightly.contains("adoptJobId: backup-") && nightly.contains("backup.homelab.dev/nightly-to-local"),
        "{nightly}"
    );
    assert!(web.contains("backup.homelab.dev/nightly-to-local: 'true'"), "{web}");
    // No comment: named after the job's id.
    let weekly_file = std::fs::read_dir(out.join("default/backups"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("backup-")))
        .unwrap();
    let weekly = std::fs::read_to_string(weekly_file).unwrap();
    assert!(
        weekly.contains("allGuests: true") && weekly.contains("exclude:\n  - 121") && weekly.contains("maxAge: 7d2h"),
        "{weekly}"
    );
    assert!(
        weekly.starts_with("# Exported by homelab-operator") && weekly.contains("#   node=pve1"),
        "{weekly}"
    );
    let jobs_before = w.sim.backup_jobs();
    let git = std::fs::read_to_string(out.join("default/proxy-hosts/code-home-arpa.yaml")).unwrap();
    assert!(git.contains("adopt: true") && git.contains("deletionPolicy: Retain"), "{git}");
    let before: Vec<_> = w.sim.guests().into_iter().map(|g| (g.vmid, g.config)).collect();
    let hosts_before = npm.hosts();
    let records_before: Vec<_> = ["nas.home.arpa", "files.home.arpa", "home.arpa"]
        .iter()
        .map(|n| dns.records(n))
        .collect();

    let (code, text) = run(&["plan", "-f", out_arg], &config).await;
    assert_eq!(code, Some(0), "nothing but the marks to write: {text}");
    assert_eq!(text.matches("= adopt: add the ownership marks").count(), 2, "{text}");
    assert_eq!(text.matches("= adopt: add the ownership mark to proxy host").count(), 2, "{text}");
    assert_eq!(text.matches("= adopt: add the ownership mark to Adopted:").count(), 4, "{text}");
    assert_eq!(text.matches("= adopt: add the ownership mark to backup job").count(), 2, "{text}");
    assert!(
        text.contains("0 to update, 0 reboots, 0 to delete, 0 pending, 0 blocked, 10 to adopt."),
        "{text}"
    );

    w.sim.reset_calls();
    let (code, text) = run(&["apply", "-f", out_arg], &config).await;
    assert_eq!(code, Some(0), "{text}");
    let writes: Vec<(String, u64)> = w.sim.calls().into_iter().filter(|(k, _)| !k.starts_with("GET")).collect();
    assert_eq!(
        writes,
        vec![
            ("POST /nodes/{node}/qemu/{vmid}/config".to_string(), 1),
            ("PUT /cluster/backup/{id}".to_string(), 2),
            ("PUT /nodes/{node}/lxc/{vmid}/config".to_string(), 1)
        ],
        "one config write per guest and per job: {text}"
    );
    // The jobs: the same options, the mark after the owner's words in the comment.
    for (old, new) in jobs_before.iter().zip(w.sim.backup_jobs()) {
        let without_comment = |j: &std::collections::BTreeMap<String, serde_json::Value>| {
            let mut j = j.clone();
            j.remove("comment");
            j
        };
        assert_eq!(without_comment(&new), without_comment(old));
        let comment = new["comment"].as_str().unwrap();
        assert!(comment.contains("managed-by: homelab-operator"), "{comment}");
        if let Some(own) = old.get("comment").and_then(|c| c.as_str()) {
            assert!(comment.starts_with(&format!("{own} | ")), "{comment}");
        }
    }
    // Those writes added the marks and changed nothing else.
    for (vmid, old) in before {
        let new = w.sim.guests().into_iter().find(|g| g.vmid == vmid).unwrap().config;
        let changed: Vec<&String> = new.keys().chain(old.keys()).filter(|k| new.get(*k) != old.get(*k)).collect();
        let mut changed: Vec<&str> = changed.into_iter().map(String::as_str).collect();
        changed.sort();
        changed.dedup();
        assert_eq!(changed, vec!["description", "tags"], "guest {vmid}");
        assert!(new["tags"].as_str().unwrap().contains("hlo-"), "{:?}", new["tags"]);
    }
    // The proxy hosts: one write each, adding the mark to meta and nothing else.
    let npm_writes: Vec<(String, u64)> = npm
        .calls()
        .into_iter()
        .filter(|(k, _)| k.starts_with("PUT") || k.starts_with("POST /nginx") || k.starts_with("DELETE"))
        .collect();
    assert_eq!(
        npm_writes,
        vec![
            ("PUT /nginx/proxy-hosts/1".to_string(), 1),
            ("PUT /nginx/proxy-hosts/2".to_string(), 1)
        ],
        "{text}"
    );
    for (old, new) in hosts_before.iter().zip(npm.hosts()) {
        let mut unmarked = new.clone();
        unmarked["meta"].as_object_mut().unwrap().remove("homelab_operator");
        for k in ["modified_on", "meta"] {
            assert_eq!(unmarked[k].is_null(), old[k].is_null(), "{k}");
        }
        let same = |v: &serde_json::Value| {
            let mut v = v.clone();
            let o = v.as_object_mut().unwrap();
            for k in ["modified_on", "meta"] {
                o.remove(k);
            }
            v
        };
        assert_eq!(same(&unmarked), same(old), "host {}", old["id"]);
        assert_eq!(unmarked["meta"]["letsencrypt_agree"], json!(false), "the host's own meta kept");
        assert!(new["meta"]["homelab_operator"].is_string(), "{new}");
    }
    let (code, text) = run(&["plan", "-f", out_arg], &config).await;
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(text.matches(": no changes\n").count(), 10, "{text}");
    // The records: the same data, each now carrying the mark as its comment.
    for (before, name) in records_before.iter().zip(["nas.home.arpa", "files.home.arpa", "home.arpa"]) {
        let after = dns.records(name);
        let data = |rs: &[SimRecord]| rs.iter().map(|r| (r.rtype.clone(), r.ttl, r.rdata.clone())).collect::<Vec<_>>();
        assert_eq!(data(&after), data(before), "{name}");
        assert!(
            after
                .iter()
                .all(|r| r.comments.as_deref().is_some_and(|c| c.contains("homelab-operator"))),
            "{name}"
        );
    }
    // What the operator now manages is not exported again.
    let (code, text) = run(&["export", "--out", out_arg, "--zone", "home.arpa", "--dry-run"], &config).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("Export: 0 guests, 0 backup jobs, 0 proxy hosts, 0 DNS records"),
        "{text}"
    );
}

/// A zone on a real BIND, its records made by hand (dynamic updates without
/// marks): exported by zone transfer, `plan` exits 0, `apply` adds only the
/// TXT registry records that carry the marks, and the data stays as it was.
#[tokio::test]
async fn a_bind_zone_exports_by_zone_transfer_and_adopts_with_registry_marks() {
    use homelab_operator::providers::dns::{DnsApi, RecordSet, rfc2136};
    let bind = dns_servers::bind();
    let port = bind.server.dns_port;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tsig"), &bind.secret).unwrap();
    let source = homelab_operator::config::SecretSource::File(dir.path().join("tsig"));
    let server = format!("127.0.0.1:{port}");
    let alg = rfc2136::parse_algorithm("hmac-sha256").unwrap();
    let by_hand = rfc2136::Rfc2136::new(&server, &bind.key_name, alg, source, Duration::from_secs(5), None);
    let set = |name: &str, rtype: &str, values: &[&str]| RecordSet {
        name: name.into(),
        rtype: rtype.into(),
        ttl: 3600,
        values: values.iter().map(|v| v.to_string()).collect(),
        mark: None,
    };
    for s in [
        set("nas.home.arpa.", "A", &["10.0.0.5"]),
        // BIND refuses an MX whose target in the zone has no address.
        set("mail.home.arpa.", "A", &["10.0.0.25"]),
        set("files.home.arpa.", "CNAME", &["nas.home.arpa."]),
        set("home.arpa.", "MX", &["10 mail.home.arpa."]),
        set("home.arpa.", "TXT", &["\"v=spf1 -all\""]),
    ] {
        by_hand.put("home.arpa.", &s).await.unwrap();
    }
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "dns:\n  bind:\n    type: rfc2136\n    server: {server}\n    tsigKeyName: {}\n    tsigSecretFile: {}\n",
            bind.key_name,
            dir.path().join("tsig").display()
        ),
    )
    .unwrap();
    let out = dir.path().join("homelab");
    let out_arg = out.to_str().unwrap();
    let (code, text) = run(&["export", "-n", "homelab", "--out", out_arg, "--zone", "bind/home.arpa"], &config).await;
    assert_eq!(code, Some(0), "{text}");
    // ns1's A record came with the zone, like every record a person keeps.
    assert!(text.contains("6 DNS records"), "{text}");
    let answers = |n: &str, t: &str| dns_servers::dig(port, n, t);
    // What `dig` answers for the records kept by hand.
    let zone = || -> Vec<Vec<String>> {
        [
            ("nas.home.arpa.", "A"),
            ("files.home.arpa.", "CNAME"),
            ("home.arpa.", "MX"),
            ("home.arpa.", "TXT"),
        ]
        .iter()
        .map(|(n, t)| answers(n, t))
        .collect()
    };
    let before = zone();

    let (code, text) = run(&["plan", "-f", out_arg], &config).await;
    assert_eq!(code, Some(0), "nothing but the marks to write: {text}");
    assert!(text.contains("6 to adopt."), "{text}");
    let (code, text) = run(&["apply", "-f", out_arg], &config).await;
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(zone(), before, "the data as it was");
    assert!(answers("hlo-a.nas.home.arpa.", "TXT")[0].contains("managed-by: homelab-operator"));
    let (code, text) = run(&["plan", "-f", out_arg], &config).await;
    assert_eq!((code, text.matches(": no changes\n").count()), (Some(0), 6), "{text}");
}

/// The README's "Moving an existing homelab in" commands, exactly as written,
/// on the demo's simulators: `demo --serve` in the background, then each
/// command in order from the same directory.
#[tokio::test]
async fn the_readme_moving_in_commands_run_on_the_demo() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("## Moving an existing homelab in").nth(1).expect("README section");
    let block = section.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    let commands: Vec<&str> = block
        .lines()
        .map(|l| l.split("   #").next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(commands[0], "homelab-operator demo --serve demo", "{block}");
    let bin = Path::new(env!("CARGO_BIN_EXE_homelab-operator")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let dir = tempfile::tempdir().unwrap();
    let sh = |line: &str| {
        let mut c = std::process::Command::new("sh");
        c.args(["-c", line]).current_dir(dir.path()).env("PATH", &path);
        c
    };
    let log = std::fs::File::create(dir.path().join("demo.log")).unwrap();
    // `exec`: the signal at the end reaches the demo itself, not a shell around it.
    let demo = sh(&format!("exec {}", commands[0]))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _stop = Stop(demo);
    // Ready once the config file is there (written last, by rename).
    let config = dir.path().join("demo/config.yaml");
    let started = std::time::Instant::now();
    while !config.exists() {
        let log = std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default();
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the demo did not start serving: {log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut outputs = vec![];
    for line in &commands[1..] {
        let mut c = sh(line);
        let out = tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{line}: {text}");
        outputs.push(text);
    }
    for (i, words) in [
        (1, "Export: 3 guests, 1 backup jobs, 1 proxy hosts, 2 DNS records"),
        (1, "ProxmoxGuest homelab/jellyfin-902 (VMID 902)"),
        (2, "0 to update, 0 reboots, 0 to delete, 0 pending, 0 blocked, 7 to adopt."),
        (
            4,
            "0 to create, 0 to update, 0 reboots, 0 to delete, 0 pending, 0 blocked, 0 to adopt.",
        ),
    ] {
        assert!(outputs[i].contains(words), "{}", outputs[i]);
    }
}

/// Ends the background demo (SIGTERM: it cleans up its files) when the test ends.
struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}
