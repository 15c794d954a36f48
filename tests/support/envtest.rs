//! A real Kubernetes control plane for tests: etcd, kube-apiserver and
//! kube-controller-manager on free loopback ports, with a PKI made here.
//! Binaries come from `$HOMELAB_ENVTEST_ASSETS` (`.ci/run` unpacks
//! `../shared/k8s` into `target/envtest`). One control plane per test binary;
//! its processes die with the test process, panics included (PDEATHSIG from a
//! thread that lives as long as the process).

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// The user the operator runs as: the chart's ServiceAccount, so the chart's
/// ClusterRole and Role (and nothing else) apply to it.
pub const OPERATOR_USER: &str = "system:serviceaccount:homelab-operator:homelab-operator";
const OPERATOR_TOKEN: &str = "envtest-operator-token";

pub struct ControlPlane {
    /// Certificates, kubeconfigs and the control plane's logs.
    pub dir: PathBuf,
    /// cluster-admin (client certificate in `system:masters`).
    pub admin_kubeconfig: PathBuf,
    /// The operator's ServiceAccount identity (bearer token).
    pub operator_kubeconfig: PathBuf,
}

static PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// The control plane of this test binary, started on first use.
pub fn control_plane() -> &'static ControlPlane {
    PLANE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("envtest-owner".into())
            .spawn(move || {
                let mut started = start();
                for _ in 0..3 {
                    if !matches!(&started, Err(e) if e == PORT_TAKEN) {
                        break;
                    }
                    started = start();
                }
                let ok = started.is_ok();
                let _ = tx.send(started.map(|(plane, children)| {
                    // The children stay referenced by this thread, which never ends.
                    std::mem::forget(children);
                    plane
                }));
                if ok {
                    loop {
                        std::thread::park();
                    }
                }
            })
            .expect("owner thread");
        rx.recv()
            .expect("envtest owner")
            .unwrap_or_else(|e| panic!("starting the envtest control plane: {e}"))
    })
}

fn assets() -> Result<PathBuf, String> {
    let dir = std::env::var("HOMELAB_ENVTEST_ASSETS").map_err(|_| {
        "HOMELAB_ENVTEST_ASSETS is not set: point it at a directory with etcd, kube-apiserver and kube-controller-manager \
         (`.ci/run` unpacks ../shared/k8s into target/envtest)"
            .to_string()
    })?;
    let dir = PathBuf::from(dir);
    for bin in ["etcd", "kube-apiserver", "kube-controller-manager"] {
        if !dir.join(bin).is_file() {
            return Err(format!("{} has no {bin}", dir.display()));
        }
    }
    Ok(dir)
}

const PORT_TAKEN: &str = "a control plane process exited at start: a port it was given was taken meanwhile";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child that gets SIGKILL when the thread that spawned it (the owner) goes.
fn spawn(bin: &Path, args: &[String], log: &Path) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))
}

struct Pki {
    ca_pem: String,
    files: Vec<(&'static str, String)>,
}

fn pki() -> Result<Pki, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(vec![])?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "envtest-ca");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let leaf = |cn: &str, org: Option<&str>, sans: Vec<String>, server: bool| -> Result<(String, String), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        if let Some(o) = org {
            p.distinguished_name.push(DnType::OrganizationName, o);
        }
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        Ok((p.signed_by(&key, &ca)?.pem(), key.serialize_pem()))
    };
    let (serving, serving_key) = leaf("kube-apiserver", None, vec!["127.0.0.1".into(), "localhost".into()], true)?;
    let (admin, admin_key) = leaf("envtest-admin", Some("system:masters"), vec![], false)?;
    let (kcm, kcm_key) = leaf("system:kube-controller-manager", None, vec![], false)?;
    let sa = KeyPair::generate()?;
    let ca_pem = ca.pem();
    Ok(Pki {
        files: vec![
            ("ca.pem", ca_pem.clone()),
            ("ca-key.pem", ca.key().serialize_pem()),
            ("serving.pem", serving),
            ("serving-key.pem", serving_key),
            ("admin.pem", admin),
            ("admin-key.pem", admin_key),
            ("kcm.pem", kcm),
            ("kcm-key.pem", kcm_key),
            ("sa.pem", sa.public_key_pem()),
            ("sa-key.pem", sa.serialize_pem()),
        ],
        ca_pem,
    })
}

fn kubeconfig(server: &str, ca_pem: &str, user: &str) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\n\
         users:\n- name: user\n  user:\n{user}\ncontexts:\n- name: envtest\n  context: {{cluster: envtest, user: user}}\ncurrent-context: envtest\n",
        b64(ca_pem)
    )
}

/// A control plane's directory (its logs, and 160 MB of etcd data) stays
/// after the run for a look at what failed; the next start removes those
/// whose process is gone. A plane's process holds the `lock` file in its
/// directory for as long as it lives (made under another name, so no sweep
/// sees it unlocked).
fn hold_and_sweep(dir: &Path) -> std::io::Result<()> {
    let pending = dir.join("lock.new");
    let lock = std::fs::File::create(&pending)?;
    lock.lock()?;
    std::fs::rename(&pending, dir.join("lock"))?;
    // Released when the process exits, however it exits.
    std::mem::forget(lock);
    for entry in std::fs::read_dir(std::env::temp_dir())?.flatten() {
        let path = entry.path();
        if path == dir || !entry.file_name().to_string_lossy().starts_with("homelab-envtest-") {
            continue;
        }
        let unheld = std::fs::File::open(path.join("lock")).is_ok_and(|f| f.try_lock().is_ok());
        if unheld {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    Ok(())
}

fn start() -> Result<(ControlPlane, Vec<Child>), String> {
    let bin = assets()?;
    let dir = tempfile::Builder::new()
        .prefix("homelab-envtest-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    hold_and_sweep(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let pki = pki().map_err(|e| e.to_string())?;
    for (name, pem) in &pki.files {
        std::fs::write(dir.join(name), pem).map_err(|e| e.to_string())?;
    }
    let f = |n: &str| dir.join(n).display().to_string();
    std::fs::write(
        dir.join("tokens.csv"),
        format!("{OPERATOR_TOKEN},{OPERATOR_USER},envtest-operator,\"system:serviceaccounts,system:serviceaccounts:homelab-operator\"\n"),
    )
    .map_err(|e| e.to_string())?;
    let (etcd_port, peer_port, api_port, kcm_port) = (free_port(), free_port(), free_port(), free_port());
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut children = vec![spawn(
        &bin.join("etcd"),
        &[
            "--name=t".into(),
            format!("--data-dir={}", f("etcd-data")),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=t={peer_url}"),
            "--initial-cluster-state=new".into(),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ],
        &dir.join("etcd.log"),
    )?];
    wait_for(Duration::from_secs(60), "etcd /health", || {
        http_get(etcd_port, "/health").is_some_and(|b| b.contains("\"health\":\"true\""))
    })?;
    children.push(spawn(
        &bin.join("kube-apiserver"),
        &[
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", f("serving.pem")),
            format!("--tls-private-key-file={}", f("serving-key.pem")),
            format!("--client-ca-file={}", f("ca.pem")),
            format!("--token-auth-file={}", f("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", f("sa.pem")),
            format!("--service-account-signing-key-file={}", f("sa-key.pem")),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
        ],
        &dir.join("kube-apiserver.log"),
    )?);
    let server = format!("https://127.0.0.1:{api_port}");
    let cert_user = |c: &str, k: &str| format!("    client-certificate: {}\n    client-key: {}", f(c), f(k));
    let admin_kubeconfig = dir.join("admin.kubeconfig");
    std::fs::write(
        &admin_kubeconfig,
        kubeconfig(&server, &pki.ca_pem, &cert_user("admin.pem", "admin-key.pem")),
    )
    .map_err(|e| e.to_string())?;
    let kcm_kubeconfig = dir.join("kcm.kubeconfig");
    std::fs::write(
        &kcm_kubeconfig,
        kubeconfig(&server, &pki.ca_pem, &cert_user("kcm.pem", "kcm-key.pem")),
    )
    .map_err(|e| e.to_string())?;
    let operator_kubeconfig = dir.join("operator.kubeconfig");
    std::fs::write(
        &operator_kubeconfig,
        kubeconfig(&server, &pki.ca_pem, &format!("    token: {OPERATOR_TOKEN}")),
    )
    .map_err(|e| e.to_string())?;
    wait_for(Duration::from_secs(120), "kube-apiserver /readyz", || {
        kubectl_ok(&admin_kubeconfig, &["get", "--raw", "/readyz"])
    })?;
    // Ports are found by binding and releasing: a plane starting in another
    // process at the same moment can take one first. Our etcd then exits
    // while the health check answers for the other plane's, which our API
    // server would share. Start again on other ports.
    if children.iter_mut().any(|c| !matches!(c.try_wait(), Ok(None))) {
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
        return Err(PORT_TAKEN.into());
    }
    children.push(spawn(
        &bin.join("kube-controller-manager"),
        &[
            format!("--kubeconfig={}", kcm_kubeconfig.display()),
            format!("--authentication-kubeconfig={}", kcm_kubeconfig.display()),
            format!("--authorization-kubeconfig={}", kcm_kubeconfig.display()),
            "--use-service-account-credentials=true".into(),
            format!("--service-account-private-key-file={}", f("sa-key.pem")),
            format!("--root-ca-file={}", f("ca.pem")),
            format!("--cluster-signing-cert-file={}", f("ca.pem")),
            format!("--cluster-signing-key-file={}", f("ca-key.pem")),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={kcm_port}"),
            "--controllers=*,-service-ca-certificate-publisher-controller".into(),
        ],
        &dir.join("kube-controller-manager.log"),
    )?);
    Ok((
        ControlPlane {
            dir,
            admin_kubeconfig,
            operator_kubeconfig,
        },
        children,
    ))
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> bool {
    Command::new("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Start-up only: a process comes up or the harness gives up with its log's name.
fn wait_for(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("{what} not ready after {limit:?}"))
}

impl ControlPlane {
    /// A cluster-admin client for the calling test's runtime.
    pub async fn admin(&self) -> kube::Client {
        client_from(&self.admin_kubeconfig).await
    }

    /// Run kubectl as cluster-admin in the repository root; returns (success, stdout+stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("kubectl")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()))
            .args(args)
            .output()
            .expect("kubectl on PATH");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }
}

pub async fn client_from(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kube config");
    kube::Client::try_from(config).expect("kube client")
}
