//! Containers have no guest agent: scripts reach them over SSH (russh), to
//! their node (`pct exec <vmid> -- sh -c …`) or to the container itself, with
//! the key from a Secret and every host key checked against the
//! `known_hosts` from another Secret.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use russh::{
    ChannelMsg, client,
    keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate},
};

use super::shell::{Guest, GuestShell, Ran, ShellError};
use crate::{
    api::{SshAccess, SshVia},
    config::SecretString,
};

/// How long connecting and logging in may take.
const CONNECT: Duration = Duration::from_secs(15);
/// How long a script may run (the update itself runs detached).
const SCRIPT_LIMIT: Duration = Duration::from_secs(180);

/// SSH as a policy's `spec.ssh` says, with its Secrets read.
pub struct SshShell {
    via: SshVia,
    user: String,
    port: u16,
    nodes: BTreeMap<String, String>,
    key: Arc<PrivateKey>,
    known_hosts: Arc<tempfile::NamedTempFile>,
    /// The containers' addresses (for `via: Guest`), by ProxmoxGuest name.
    addresses: BTreeMap<String, String>,
}

impl SshShell {
    pub fn new(
        spec: &SshAccess,
        private_key: &SecretString,
        known_hosts: &SecretString,
        addresses: BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let key = russh::keys::decode_secret_key(private_key.expose(), None)
            .map_err(|e| format!("spec.ssh.privateKeySecret: not an unencrypted OpenSSH private key ({e})"))?;
        // russh reads known_hosts (hashed names included) from a file.
        let mut file = tempfile::NamedTempFile::new().map_err(|e| format!("known_hosts: {e}"))?;
        std::io::Write::write_all(&mut file, known_hosts.expose().as_bytes()).map_err(|e| format!("known_hosts: {e}"))?;
        Ok(Self {
            via: spec.via,
            user: spec.user.clone(),
            port: spec.port,
            nodes: spec.nodes.clone(),
            key: Arc::new(key),
            known_hosts: Arc::new(file),
            addresses,
        })
    }

    /// Where to connect and what to run there.
    fn route(&self, guest: &Guest, script: &str) -> Result<(String, String), ShellError> {
        let quoted = shell_quote(script);
        match self.via {
            SshVia::Node => {
                let host = self.nodes.get(&guest.node).cloned().unwrap_or_else(|| guest.node.clone());
                Ok((host, format!("pct exec {} -- sh -c {quoted}", guest.vmid)))
            }
            SshVia::Guest => {
                let host = self
                    .addresses
                    .get(&guest.name)
                    .cloned()
                    .ok_or_else(|| ShellError::Unavailable(format!("{} has no address yet to reach over SSH", guest.name)))?;
                Ok((host, format!("sh -c {quoted}")))
            }
        }
    }

    async fn session(&self, host: &str) -> Result<client::Handle<HostKeyCheck>, String> {
        let refused = Arc::new(std::sync::Mutex::new(None));
        let check = HostKeyCheck {
            host: host.to_string(),
            port: self.port,
            known_hosts: self.known_hosts.clone(),
            refused: refused.clone(),
        };
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(SCRIPT_LIMIT),
            ..Default::default()
        });
        let connect = async {
            let mut session =
                client::connect(config, (host, self.port), check)
                    .await
                    .map_err(|e| match refused.lock().expect("host key").take() {
                        Some(fp) => format!("SSH to {host}: its host key {fp} is not in spec.ssh.knownHostsSecret (refused)"),
                        None => format!("SSH to {host}:{}: {e}", self.port),
                    })?;
            let hash = session.best_supported_rsa_hash().await.ok().flatten().flatten();
            let auth = session
                .authenticate_publickey(&self.user, PrivateKeyWithHashAlg::new(self.key.clone(), hash))
                .await
                .map_err(|e| format!("SSH login to {host} as {}: {e}", self.user))?;
            match auth.success() {
                true => Ok(session),
                false => Err(format!("SSH login to {host} as {} refused: the key is not authorized", self.user)),
            }
        };
        tokio::time::timeout(CONNECT, connect)
            .await
            .unwrap_or_else(|_| Err(format!("SSH to {host}:{}: no answer within {}s", self.port, CONNECT.as_secs())))
    }
}

impl GuestShell for SshShell {
    fn run<'a>(&'a self, guest: &'a Guest, script: &'a str) -> BoxFuture<'a, Result<Ran, ShellError>> {
        Box::pin(async move {
            let (host, command) = self.route(guest, script)?;
            let session = self.session(&host).await.map_err(ShellError::Unavailable)?;
            let ran = tokio::time::timeout(SCRIPT_LIMIT, exec(&session, &command))
                .await
                .unwrap_or_else(|_| Err(format!("a command did not finish within {}s", SCRIPT_LIMIT.as_secs())));
            let _ = session.disconnect(russh::Disconnect::ByApplication, "", "en").await;
            ran.map_err(ShellError::Unavailable)
        })
    }
}

async fn exec(session: &client::Handle<HostKeyCheck>, command: &str) -> Result<Ran, String> {
    let mut channel = session.channel_open_session().await.map_err(|e| format!("SSH session: {e}"))?;
    channel.exec(true, command).await.map_err(|e| format!("SSH exec: {e}"))?;
    let (mut out, mut err, mut exit) = (Vec::new(), Vec::new(), None);
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } => err.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => exit = Some(exit_status as i32),
            _ => {}
        }
    }
    Ok(Ran {
        exit: exit.ok_or("the command ended without an exit status (killed by a signal?)")?,
        out: String::from_utf8_lossy(&out).into_owned(),
        err: String::from_utf8_lossy(&err).into_owned(),
    })
}

/// `'…'` with every `'` closed, escaped and reopened: one word for any POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Accepts a server only when its key is in the known_hosts for its host and port.
struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: Arc<tempfile::NamedTempFile>,
    /// The fingerprint of a key refused, for the message.
    refused: Arc<std::sync::Mutex<Option<String>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        let known = russh::keys::check_known_hosts_path(&self.host, self.port, key, self.known_hosts.path()).unwrap_or(false);
        if !known {
            *self.refused.lock().expect("host key") = Some(key.fingerprint(Default::default()).to_string());
        }
        Ok(known)
    }
}
