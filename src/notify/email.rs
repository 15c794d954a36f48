//! Email over SMTP (lettre): STARTTLS, implicit TLS or, explicitly, none; auth when configured.

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message as Mail, Tokio1Executor,
    message::header::ContentType,
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};

use super::{Attempt, message::Message};
use crate::config::{EmailChannel, SmtpSecurity};

fn tls(e: &EmailChannel) -> Result<TlsParameters, String> {
    let mut b = TlsParameters::builder(e.host.clone());
    if let Some(path) = &e.ca_file {
        let pem = std::fs::read(path).map_err(|err| format!("reading CA file {}: {err}", path.display()))?;
        let cert = Certificate::from_pem(&pem).map_err(|err| format!("CA file {}: {err}", path.display()))?;
        b = b.add_root_certificate(cert);
    }
    b.build_rustls().map_err(|err| err.to_string())
}

fn transport(e: &EmailChannel, timeout: std::time::Duration) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let tls = match e.security {
        SmtpSecurity::Starttls => Tls::Required(tls(e)?),
        SmtpSecurity::Tls => Tls::Wrapper(tls(e)?),
        SmtpSecurity::None => Tls::None,
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(e.host.clone())
        .port(e.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let (Some(user), Some(pw)) = (&e.username, &e.password) {
        let pw = pw.load("password").map_err(|err| err.to_string())?;
        b = b.credentials(Credentials::new(user.clone(), pw.expose().to_string()));
    }
    Ok(b.build())
}

pub async fn send(e: &EmailChannel, timeout: std::time::Duration, msg: &Message) -> Attempt {
    let mut mail = Mail::builder().subject(msg.title()).header(ContentType::TEXT_PLAIN);
    mail = match e.from.parse() {
        Ok(f) => mail.from(f),
        Err(err) => return Attempt::Failed(format!("from {:?}: {err}", e.from)),
    };
    for to in &e.to {
        mail = match to.parse() {
            Ok(t) => mail.to(t),
            Err(err) => return Attempt::Failed(format!("to {to:?}: {err}")),
        };
    }
    let body = format!("{}\n\n{}\n", msg.summary, msg.detail);
    let mail = match mail.body(body) {
        Ok(m) => m,
        Err(err) => return Attempt::Failed(err.to_string()),
    };
    let smtp = match transport(e, timeout) {
        Ok(t) => t,
        Err(err) => return Attempt::Failed(err),
    };
    match smtp.send(mail).await {
        Ok(_) => Attempt::Sent,
        // 4xx answers and connection trouble pass; 5xx refusals (bad auth, unknown recipient) do not.
        Err(err) if err.is_permanent() => Attempt::Failed(format!("SMTP: {err}")),
        Err(err) => Attempt::Retry {
            after: None,
            error: format!("SMTP: {err}"),
        },
    }
}
