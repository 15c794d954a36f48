// Shared by several test binaries; each uses only part of it.
#![allow(dead_code)]

//! Real DNS servers for tests, started in temporary directories on free
//! loopback ports: PowerDNS Authoritative (sqlite backend, HTTP API) and BIND
//! (a zone accepting TSIG-signed dynamic updates). Missing packages are
//! installed on first use (`debian`); what cannot be is a test failure that
//! says how to install it, never a silent pass.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const ZONE: &str = "home.arpa.";

fn need(bin: &str, package: &str) -> PathBuf {
    super::debian::ensure();
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("{bin} not found: install it with `apt-get install {package}` (.ci/run does this)");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_tcp(port: u16, what: &str, log: &Path) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start: {}", std::fs::read_to_string(log).unwrap_or_default());
}

pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub dns_port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `dig +short` against the server: what a real resolver sees.
pub fn dig(port: u16, name: &str, rtype: &str) -> Vec<String> {
    let out = Command::new(need("dig", "bind9-dnsutils"))
        .args([
            "+short",
            "+tcp",
            "+time=2",
            "+tries=1",
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            name,
            rtype,
        ])
        .output()
        .expect("running dig");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

pub struct PowerDns {
    pub server: Server,
    pub api_url: String,
    pub api_key: String,
}

pub fn powerdns() -> PowerDns {
    let bin = need("pdns_server", "pdns-server pdns-backend-sqlite3");
    let schema = [
        "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql",
        "/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap_or_else(|| panic!("the PowerDNS sqlite schema is missing: apt-get install pdns-backend-sqlite3"));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pdns.db");
    // python3's sqlite3 module loads the schema; no sqlite3 CLI needed.
    let ok = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; sqlite3.connect(sys.argv[1]).executescript(open(sys.argv[2]).read())",
        ])
        .arg(&db)
        .arg(schema)
        .status()
        .expect("python3");
    assert!(ok.success(), "loading the PowerDNS schema");
    let (dns_port, api_port) = (free_port(), free_port());
    let api_key = format!("key-{}", rand::random::<u64>());
    let log = dir.path().join("pdns.log");
    let child = Command::new(bin)
        .args([
            "--no-config",
            "--daemon=no",
            "--guardian=no",
            "--disable-syslog",
            "--write-pid=no",
            "--local-address=127.0.0.1",
            "--launch=gsqlite3",
            "--api=yes",
            "--webserver=yes",
            "--webserver-address=127.0.0.1",
            "--webserver-allow-from=127.0.0.0/8",
        ])
        .arg(format!("--socket-dir={}", dir.path().display()))
        .arg(format!("--local-port={dns_port}"))
        .arg(format!("--gsqlite3-database={}", db.display()))
        .arg(format!("--api-key={api_key}"))
        .arg(format!("--webserver-port={api_port}"))
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(dir.path().join("pdns.err")).unwrap()))
        .spawn()
        .expect("starting pdns_server");
    let server = Server { child, dir, dns_port };
    wait_tcp(api_port, "pdns_server", &log);
    let api_url = format!("http://127.0.0.1:{api_port}");
    // The zone the tests work in.
    let out = Command::new("python3")
        .args([
            "-c",
            "import json,sys,urllib.request as u; r=u.Request(sys.argv[1]+'/api/v1/servers/localhost/zones', data=json.dumps({'name':sys.argv[3],'kind':'Native','nameservers':['ns1.'+sys.argv[3]]}).encode(), headers={'X-API-Key':sys.argv[2],'Content-Type':'application/json'}); print(u.urlopen(r).status)",
            &api_url,
            &api_key,
            ZONE,
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("201"),
        "creating the zone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PowerDns { server, api_url, api_key }
}

pub struct Bind {
    pub server: Server,
    pub key_name: String,
    pub secret: String,
}

pub fn bind() -> Bind {
    use base64::Engine;
    let bin = need("named", "bind9");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let port = free_port();
    let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let key_name = "homelab-operator".to_string();
    std::fs::write(
        dir.path().join("named.conf"),
        format!(
            r#"options {{
  directory "{d}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  pid-file "{d}/named.pid";
  session-keyfile "{d}/session.key";
  recursion no;
  dnssec-validation no;
}};
controls {{ }};
key "{key_name}" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "home.arpa" {{ type primary; file "{d}/home.arpa.db"; update-policy {{ grant {key_name} zonesub ANY; }}; allow-transfer {{ key {key_name}; }}; }};
zone "closed.arpa" {{ type primary; file "{d}/closed.arpa.db"; allow-transfer {{ none; }}; }};
"#
        ),
    )
    .unwrap();
    for zone in ["home.arpa", "closed.arpa"] {
        std::fs::write(
            dir.path().join(format!("{zone}.db")),
            format!("$TTL 300\n@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 3600 600 86400 300\n@ IN NS ns1.{zone}.\nns1 IN A 127.0.0.1\n"),
        )
        .unwrap();
    }
    let log = dir.path().join("named.log");
    let child = Command::new(bin)
        .args(["-g", "-c"])
        .arg(dir.path().join("named.conf"))
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(dir.path().join("named.err")).unwrap()))
        .spawn()
        .expect("starting named");
    let server = Server {
        child,
        dir,
        dns_port: port,
    };
    wait_tcp(port, "named", &server.dir.path().join("named.err"));
    // named listens before it has loaded the zone and answers SERVFAIL
    // until then: wait until it serves the zone's SOA.
    let start = Instant::now();
    while dig(port, "home.arpa.", "SOA").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "named did not load home.arpa: {}",
            std::fs::read_to_string(server.dir.path().join("named.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Bind { server, key_name, secret }
}
