//! A real SMTP server for the email channel: Debian's python3-aiosmtpd
//! (`tests/notify/smtp_server.py`) on a loopback port, with STARTTLS (an rcgen
//! certificate) and AUTH, writing every message it receives to a directory.

use std::{
    io::BufRead,
    process::{Child, Command, Stdio},
};

/// The SMTP server: python3-aiosmtpd with STARTTLS and AUTH, killed on drop.
pub struct Smtp {
    child: Child,
    port: u16,
    out: tempfile::TempDir,
    ca: std::path::PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start it on a free loopback port (user `alerts@home.arpa`, password `smtp-s3cret`).
pub fn smtp() -> Smtp {
    super::debian::ensure();
    let out = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert_path, key_path) = (out.path().join("cert.pem"), out.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mails = out.path().join("mail");
    std::fs::create_dir(&mails).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/notify/smtp_server.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .args([port.to_string(), cert_path.display().to_string(), key_path.display().to_string()])
        .args(["alerts@home.arpa", "smtp-s3cret", &mails.display().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 with aiosmtpd: apt-get install python3-aiosmtpd (.ci/run does)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "ready",
        "the SMTP server did not start (apt-get install python3-aiosmtpd)"
    );
    Smtp {
        child,
        port,
        ca: cert_path,
        out,
    }
}

impl Smtp {
    /// A `notifications:` entry for this server (STARTTLS, AUTH, its CA), indented for the section.
    pub fn channel(&self, name: &str, password_file: &std::path::Path) -> String {
        format!(
            "  {name}: {{type: email, host: 127.0.0.1, port: {}, security: starttls, username: alerts@home.arpa, passwordFile: {}, \
             from: 'homelab-operator <alerts@home.arpa>', to: [me@home.arpa, ops@home.arpa], caFile: {}}}\n",
            self.port,
            password_file.display(),
            self.ca.display()
        )
    }

    /// The messages received so far, in order.
    pub fn mails(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(self.out.path().join("mail"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
    }
}
