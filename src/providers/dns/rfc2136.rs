//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), over TCP, built with
//! hickory-proto. Servers keep no comments, so the ownership mark is a TXT
//! registry record beside each RRset, as external-dns does:
//! `hlo-<type>.<name>` TXT "<mark>".

use std::{sync::Arc, time::Duration};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{DNSClass, Name, RData, Record, RecordType, TSigVerifier, TSigner, rdata::TXT, rdata::tsig::TsigAlgorithm},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{DnsApi, Error, RecordSet, absolute};
use crate::{config::SecretSource, metrics::Metrics};

#[derive(Clone)]
pub struct Rfc2136 {
    server: String,
    key_name: String,
    algorithm: TsigAlgorithm,
    secret: SecretSource,
    timeout: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

/// `hmac-sha256` and friends as hickory's algorithm.
pub fn parse_algorithm(s: &str) -> Option<TsigAlgorithm> {
    match s.to_ascii_lowercase().trim_end_matches('.') {
        "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Some(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
        _ => None,
    }
}

/// The registry record that carries the mark of `name`/`rtype`.
pub fn registry_name(name: &str, rtype: &str) -> String {
    format!("hlo-{}.{}", rtype.to_ascii_lowercase(), absolute(name))
}

impl Rfc2136 {
    pub fn new(
        server: &str,
        key_name: &str,
        algorithm: TsigAlgorithm,
        secret: SecretSource,
        timeout: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Self {
            server: server.to_string(),
            key_name: key_name.to_string(),
            algorithm,
            secret,
            timeout,
            metrics,
        }
    }

    fn invalid(&self, op: &'static str, message: impl Into<String>) -> Error {
        Error::Invalid {
            server: self.server.clone(),
            op,
            message: message.into(),
        }
    }

    fn name(&self, op: &'static str, s: &str) -> Result<Name, Error> {
        Name::from_ascii(absolute(s)).map_err(|e| self.invalid(op, format!("bad name {s:?}: {e}")))
    }

    fn signer(&self) -> Result<TSigner, Error> {
        use base64::Engine;
        let secret = self.secret.load("tsigSecret").map_err(|e| Error::Credentials(e.to_string()))?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.expose())
            .map_err(|_| Error::Credentials("tsigSecret is not base64 (as tsig-keygen prints it)".into()))?;
        let name = Name::from_ascii(absolute(&self.key_name)).map_err(|e| Error::Credentials(format!("tsigKeyName: {e}")))?;
        TSigner::new(key, self.algorithm.clone(), name, 300).map_err(|e| Error::Credentials(e.to_string()))
    }

    /// Send one message over TCP (length-prefixed) and return the answer's bytes.
    async fn exchange(&self, op: &'static str, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        let transport = |message: String| Error::Transport {
            server: self.server.clone(),
            op,
            message,
        };
        let run = async {
            let mut stream = send(&self.server, bytes).await.map_err(|e| transport(e.to_string()))?;
            receive(&mut stream).await.map_err(|e| transport(e.to_string()))
        };
        let result = tokio::time::timeout(self.timeout, run)
            .await
            .unwrap_or_else(|_| Err(transport("timed out".into())));
        if let Some(m) = &self.metrics {
            m.outside_call("rfc2136", op, if result.is_ok() { "ok" } else { "transient_error" });
        }
        result
    }

    /// The message signed with TSIG, as bytes, and the verifier of its answers.
    fn sign(&self, op: &'static str, mut message: Message) -> Result<(Vec<u8>, Option<TSigVerifier>), Error> {
        message.metadata.id = rand::random();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let verifier = message
            .finalize(&self.signer()?, now)
            .map_err(|e| self.invalid(op, e.to_string()))?;
        let bytes = message.to_vec().map_err(|e| self.invalid(op, e.to_string()))?;
        Ok((bytes, verifier))
    }

    /// Send a message signed with TSIG, check the answer's signature and rcode.
    async fn signed(&self, op: &'static str, message: Message) -> Result<Message, Error> {
        let (bytes, mut verifier) = self.sign(op, message)?;
        let answer = self.exchange(op, &bytes).await?;
        let parsed = Message::from_vec(&answer).map_err(|e| self.invalid(op, format!("undecodable answer: {e}")))?;
        let rcode = parsed.metadata.response_code;
        if rcode != hickory_proto::op::ResponseCode::NoError {
            // A refused key gets an unsigned answer; report the rcode (and TSIG error) as is.
            let tsig_error = parsed.signature().map(|s| format!("TSIG error {:?}", s.data.error));
            return Err(Error::Rcode {
                server: self.server.clone(),
                op,
                rcode: mnemonic(rcode),
                message: tsig_error,
            });
        }
        if let Some(v) = verifier.as_mut() {
            v.verify(&answer).map_err(|e| Error::Rcode {
                server: self.server.clone(),
                op,
                rcode: "BADSIG".into(),
                message: Some(e.to_string()),
            })?;
        }
        Ok(parsed)
    }

    async fn query(&self, name: &Name, rtype: RecordType) -> Result<Vec<Record>, Error> {
        let mut message = Message::query();
        message.metadata.recursion_desired = false;
        message.add_query(Query::query(name.clone(), rtype));
        let answer = self.signed("query", message).await;
        match answer {
            Ok(m) => Ok(m
                .answers
                .into_iter()
                .filter(|r| r.record_type() == rtype && r.name == *name)
                .collect()),
            Err(Error::Rcode { rcode, .. }) if rcode == "NXDOMAIN" || rcode == "NXRRSET" => Ok(vec![]),
            Err(e) => Err(e),
        }
    }

    /// AXFR over one TCP connection: messages until the closing SOA, each
    /// checked for its rcode and TSIG (the verifier follows the chain of MACs).
    async fn transfer(&self, zone: &Name) -> Result<Vec<Record>, Error> {
        const OP: &str = "transfer";
        let mut message = Message::query();
        message.add_query(Query::query(zone.clone(), RecordType::AXFR));
        let (bytes, mut verifier) = self.sign(OP, message)?;
        let transport = |message: String| Error::Transport {
            server: self.server.clone(),
            op: OP,
            message,
        };
        let run = async {
            let mut stream = send(&self.server, &bytes).await.map_err(|e| transport(e.to_string()))?;
            let mut records: Vec<Record> = vec![];
            loop {
                let buf = receive(&mut stream).await.map_err(|e| transport(e.to_string()))?;
                let parsed = self.transfer_message(&buf, verifier.as_mut())?;
                records.extend(parsed.answers);
                let soas = records.iter().filter(|r| r.record_type() == RecordType::SOA).count();
                if soas >= 2 {
                    return Ok::<_, Error>(records);
                }
            }
        };
        let result = tokio::time::timeout(self.timeout, run)
            .await
            .unwrap_or_else(|_| Err(transport("timed out".into())));
        if let Some(m) = &self.metrics {
            m.outside_call("rfc2136", OP, if result.is_ok() { "ok" } else { "transient_error" });
        }
        result
    }

    /// One message of a transfer: its rcode, then its signature.
    fn transfer_message(&self, buf: &[u8], verifier: Option<&mut TSigVerifier>) -> Result<Message, Error> {
        let parsed = Message::from_vec(buf).map_err(|e| self.invalid("transfer", format!("undecodable answer: {e}")))?;
        let rcode = parsed.metadata.response_code;
        if rcode != hickory_proto::op::ResponseCode::NoError {
            return Err(Error::Rcode {
                server: self.server.clone(),
                op: "transfer",
                rcode: mnemonic(rcode),
                message: Some("zone transfer refused: allow it to the key (allow-transfer { key <name>; })".into()),
            });
        }
        if let Some(v) = verifier {
            v.verify(buf).map_err(|e| Error::Rcode {
                server: self.server.clone(),
                op: "transfer",
                rcode: "BADSIG".into(),
                message: Some(e.to_string()),
            })?;
        }
        Ok(parsed)
    }

    fn update_message(&self, zone: &Name) -> Message {
        let mut message = Message::new(0, MessageType::Query, OpCode::Update);
        let mut q = Query::new();
        q.set_name(zone.clone())
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        message.add_query(q);
        message
    }
}

/// Connect and send one length-prefixed message (DNS over TCP).
async fn send(server: &str, bytes: &[u8]) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(server).await?;
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    Ok(stream)
}

/// One length-prefixed message.
async fn receive(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut buf = vec![0; len as usize];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// The RFC mnemonic (`NXDOMAIN`, `NOTAUTH`, …) that operators know.
fn mnemonic(rcode: hickory_proto::op::ResponseCode) -> String {
    use hickory_proto::op::ResponseCode::*;
    match rcode {
        NoError => "NOERROR".into(),
        FormErr => "FORMERR".into(),
        ServFail => "SERVFAIL".into(),
        NXDomain => "NXDOMAIN".into(),
        NotImp => "NOTIMP".into(),
        Refused => "REFUSED".into(),
        YXDomain => "YXDOMAIN".into(),
        YXRRSet => "YXRRSET".into(),
        NXRRSet => "NXRRSET".into(),
        NotAuth => "NOTAUTH".into(),
        NotZone => "NOTZONE".into(),
        BADSIG => "BADSIG".into(),
        BADKEY => "BADKEY".into(),
        BADTIME => "BADTIME".into(),
        other => format!("{other:?}").to_ascii_uppercase(),
    }
}

/// A transfer's records as RRsets (values sorted), each with the mark its
/// registry record carries; the registry records themselves are not listed.
fn record_sets(records: Vec<Record>) -> Vec<RecordSet> {
    use std::collections::BTreeMap;
    let mut sets: BTreeMap<(String, String), RecordSet> = BTreeMap::new();
    let mut marks: BTreeMap<String, String> = BTreeMap::new();
    for r in records {
        let name = r.name.to_ascii().to_ascii_lowercase();
        let rtype = r.record_type().to_string();
        if let (RData::TXT(t), true) = (&r.data, name.starts_with("hlo-")) {
            let text = t.txt_data.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
            marks.insert(name, text);
            continue;
        }
        let set = sets.entry((name.clone(), rtype.clone())).or_insert_with(|| RecordSet {
            name,
            rtype,
            ttl: r.ttl,
            values: vec![],
            mark: None,
        });
        let value = r.data.to_string();
        // The closing SOA repeats the opening one.
        if !set.values.contains(&value) {
            set.values.push(value);
        }
    }
    sets.into_values()
        .map(|mut s| {
            s.values.sort();
            s.mark = marks.get(&registry_name(&s.name, &s.rtype)).cloned();
            s
        })
        .collect()
}

/// RFC 2136 §2.5.2 "delete an RRset": class ANY, TTL 0, empty rdata.
fn delete_rrset(name: &Name, rtype: RecordType) -> Record {
    let mut r = Record::from_rdata(name.clone(), 0, RData::Update0(rtype));
    r.dns_class = DNSClass::ANY;
    r
}

fn rtype_of(s: &str) -> Result<RecordType, String> {
    s.to_ascii_uppercase()
        .parse::<RecordType>()
        .map_err(|e| format!("record type {s:?}: {e}"))
}

impl DnsApi for Rfc2136 {
    /// The zone by transfer (AXFR, signed with the same key): every RRset,
    /// the registry records folded in as their marks.
    async fn list(&self, zone: &str) -> Result<Vec<RecordSet>, Error> {
        let records = self.transfer(&self.name("transfer", zone)?).await?;
        Ok(record_sets(records))
    }

    async fn get(&self, _zone: &str, name: &str, rtype: &str) -> Result<Option<RecordSet>, Error> {
        let rt = rtype_of(rtype).map_err(|m| self.invalid("query", m))?;
        let owner = self.name("query", name)?;
        let records = self.query(&owner, rt).await?;
        if records.is_empty() {
            return Ok(None);
        }
        let registry = self
            .query(&self.name("query", &registry_name(name, rtype))?, RecordType::TXT)
            .await?;
        let mark = registry.iter().find_map(|r| match &r.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        });
        let mut values: Vec<String> = records.iter().map(|r| r.data.to_string()).collect();
        values.sort();
        Ok(Some(RecordSet {
            name: absolute(name),
            rtype: rtype.to_ascii_uppercase(),
            ttl: records[0].ttl,
            values,
            mark,
        }))
    }

    async fn put(&self, zone: &str, set: &RecordSet) -> Result<(), Error> {
        let rt = rtype_of(&set.rtype).map_err(|m| self.invalid("update", m))?;
        let zone = self.name("update", zone)?;
        let owner = self.name("update", &set.name)?;
        let mut message = self.update_message(&zone);
        // Replace atomically in one UPDATE: delete the RRset, add every value, rewrite the mark.
        message.add_authority(delete_rrset(&owner, rt));
        for v in &set.values {
            let data = RData::try_from_str(rt, v).map_err(|e| self.invalid("update", format!("{} value {v:?}: {e}", set.rtype)))?;
            message.add_authority(Record::from_rdata(owner.clone(), set.ttl, data));
        }
        // The registry record follows the mark: rewritten with it, removed without it.
        let reg = self.name("update", &registry_name(&set.name, &set.rtype))?;
        message.add_authority(delete_rrset(&reg, RecordType::TXT));
        if let Some(mark) = &set.mark {
            message.add_authority(Record::from_rdata(reg, set.ttl, RData::TXT(TXT::new(vec![mark.clone()]))));
        }
        self.signed("update", message).await.map(|_| ())
    }

    async fn delete(&self, zone: &str, name: &str, rtype: &str) -> Result<(), Error> {
        let rt = rtype_of(rtype).map_err(|m| self.invalid("update", m))?;
        let zone = self.name("update", zone)?;
        let mut message = self.update_message(&zone);
        message.add_authority(delete_rrset(&self.name("update", name)?, rt));
        message.add_authority(delete_rrset(&self.name("update", &registry_name(name, rtype))?, RecordType::TXT));
        self.signed("update", message).await.map(|_| ())
    }
}
