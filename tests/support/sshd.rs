//! A real OpenSSH server (Debian's openssh-server) on a loopback port, for
//! the SSH path of guest updates. It lets in one test key, as the user the
//! tests run as, and every session runs a stand-in shell: what the operator
//! sent, with stand-ins of `pct`, `apt-get` and `apt` first on PATH, and the
//! guest's state directory, reboot marker and systemd marker moved under the
//! test's directory, so nothing on the machine is touched.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

pub struct Sshd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub user: String,
    /// The client's private key (OpenSSH format).
    pub client_key: String,
    /// `[127.0.0.1]:PORT ssh-ed25519 …`: the server's host key as known_hosts pins it.
    pub known_hosts: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("running a setup command");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn keygen(path: &Path) {
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(path));
}

fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    run(Command::new("chmod").arg("755").arg(path));
}

/// The stand-ins: a Debian guest with two pending updates (one a security update).
fn stand_ins(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        dir.join("pending"),
        "curl/trixie-updates 8.14.1-2+deb13u1 amd64 [upgradable from: 8.14.1-2]\n\
         openssl/trixie-security 3.5.1-1+deb13u1 amd64 [upgradable from: 3.5.1-1]\n",
    )
    .unwrap();
    let d = dir.display();
    script(
        &bin.join("pct"),
        "#!/bin/sh\n# pct exec VMID -- CMD…\necho \"$2\" >> \"$STANDIN/pct-vmids\"\nshift 3\nexec \"$@\"\n",
    );
    script(
        &bin.join("apt"),
        &format!("#!/bin/sh\n[ \"$1 $2\" = \"list --upgradable\" ] || exit 100\necho Listing...\ncat {d}/pending\n"),
    );
    script(
        &bin.join("apt-get"),
        &format!(
            "#!/bin/sh\ncase \"$*\" in\n  *dist-upgrade*)\n    echo run >> {d}/upgrades\n    sed 's#/.*##; s#^#Setting up #' {d}/pending\n    : > {d}/pending\n    touch {d}/reboot-required\n    ;;\nesac\nexit 0\n"
        ),
    );
    script(
        &dir.join("shell"),
        &format!(
            "#!/bin/sh\n# The test account's shell: the operator's command with the guest's paths under {d}.\nexport STANDIN={d}\ncmd=$(printf '%s' \"$SSH_ORIGINAL_COMMAND\" | sed -e 's#/var/lib/homelab-operator#{d}/state#g' -e 's#/run/systemd/system#{d}/no-systemd#g' -e 's#/var/run/reboot-required#{d}/reboot-required#g')\nPATH={d}/bin:$PATH exec sh -c \"$cmd\"\n"
        ),
    );
}

/// Start sshd and wait until it accepts connections.
pub fn start() -> Sshd {
    super::debian::ensure();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    keygen(&p("host_key"));
    keygen(&p("client_key"));
    std::fs::copy(p("client_key.pub"), p("authorized_keys")).unwrap();
    stand_ins(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
         PermitRootLogin prohibit-password\nAllowUsers {user}\nForceCommand {}\n",
        p("host_key").display(),
        p("sshd.pid").display(),
        p("authorized_keys").display(),
        p("shell").display(),
    );
    std::fs::write(p("sshd_config"), config).unwrap();
    // Run as root, sshd wants its privilege-separation directory (the service makes it at boot).
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(p("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(p("sshd.log")).unwrap())
        .spawn()
        .expect("/usr/sbin/sshd");
    wait_listening(port, &p("sshd.log"));
    // What the README says to pin: `ssh-keyscan -p PORT HOST`, checked against the host's own key.
    let scanned = Command::new("ssh-keyscan")
        .args(["-t", "ed25519", "-p", &port.to_string(), "127.0.0.1"])
        .output()
        .expect("ssh-keyscan");
    let known_hosts = String::from_utf8(scanned.stdout).unwrap();
    let host_pub = std::fs::read_to_string(p("host_key.pub")).unwrap();
    let key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    assert!(
        known_hosts.starts_with(&format!("[127.0.0.1]:{port} {}", key.join(" "))),
        "{known_hosts}"
    );
    Sshd {
        child,
        port,
        user,
        client_key: std::fs::read_to_string(p("client_key")).unwrap(),
        known_hosts,
        dir,
    }
}

/// Polls until the port accepts a connection (or sshd's log says why not).
fn wait_listening(port: u16, log: &PathBuf) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "sshd did not listen: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Sshd {
    /// How many times the stand-in `apt-get dist-upgrade` ran.
    pub fn upgrades(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("upgrades"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// The VMIDs `pct exec` was asked for.
    pub fn pct_vmids(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("pct-vmids"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}
