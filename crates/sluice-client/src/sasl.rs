//! SASL authentication of every connection the client opens.
//!
//! With [`ClientConfig::sasl`] set, a connection (bootstrap, per broker,
//! group coordinator: they all go through one dial) authenticates right
//! after TCP connect and the TLS handshake, before its reader and writer
//! tasks start, with the native exchange of `protocol.md`
//! ("Authentication"): SaslHandshake naming the mechanism, then one
//! (PLAIN) or two (SCRAM) SaslAuthenticate round trips; the SCRAM server's
//! final signature is verified, so a broker that does not know the
//! password is not trusted either. The whole exchange is bounded by
//! `connect_timeout` plus `request_timeout`.
//!
//! A refusal is [`ClientError::Authentication`] (`authentication failed for
//! user X`), not retried: the credentials stay wrong until someone fixes
//! them.

use bytes::{Bytes, BytesMut};
use sluice_auth::plain::encode_plain;
use sluice_auth::scram::{ScramClient, ScramMechanism};
use sluice_protocol::wire::{decode_response, encode_request};
use sluice_protocol::{
    ApiKey, ErrorCode, Request, Response, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::ClientConfig;
use crate::error::{ClientError, Result};

/// A SASL mechanism the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// PLAIN (RFC 4616): the password itself crosses the wire; use it over TLS.
    Plain,
    /// SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM-SHA-512.
    ScramSha512,
}

impl SaslMechanism {
    /// The SASL name (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn scram(self) -> Option<ScramMechanism> {
        match self {
            SaslMechanism::Plain => None,
            SaslMechanism::ScramSha256 => Some(ScramMechanism::Sha256),
            SaslMechanism::ScramSha512 => Some(ScramMechanism::Sha512),
        }
    }
}

impl std::fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SaslMechanism {
    type Err = String;

    /// Case-insensitive: `plain`, `scram-sha-256`, `SCRAM-SHA-512`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            _ => Err(format!(
                "unknown SASL mechanism {s:?} (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            )),
        }
    }
}

/// SASL credentials for every connection of a client.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password (never printed by `Debug`).
    pub password: String,
}

impl ClientSasl {
    /// Credentials for `username` with `mechanism`.
    pub fn new(
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> ClientSasl {
        ClientSasl {
            mechanism,
            username: username.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for ClientSasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Runs the SASL exchange on a fresh stream (see the module docs).
pub(crate) async fn authenticate<S>(stream: &mut S, addr: &str, config: &ClientConfig) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(sasl) = &config.sasl else {
        return Ok(());
    };
    let limit = config.connect_timeout + config.request_timeout;
    match tokio::time::timeout(limit, exchange(stream, addr, config, sasl)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout {
            what: format!("SASL authentication with {addr}"),
            after: limit,
        }),
    }
}

async fn exchange<S>(
    stream: &mut S,
    addr: &str,
    config: &ClientConfig,
    sasl: &ClientSasl,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut wire = Wire {
        stream,
        addr,
        config,
        next_id: 0,
    };
    let failed = |reason: String| ClientError::Authentication {
        addr: addr.to_string(),
        user: sasl.username.clone(),
        mechanism: sasl.mechanism.name(),
        reason,
    };
    let handshake = Request::SaslHandshake(SaslHandshakeRequest {
        mechanism: sasl.mechanism.name().to_string(),
    });
    match wire.call(&handshake, ApiKey::SaslHandshake).await? {
        Response::SaslHandshake(r) => match r.error {
            ErrorCode::None => {}
            ErrorCode::UnsupportedSaslMechanism => {
                return Err(failed(format!(
                    "the broker does not accept {} here; it offers {} (PLAIN needs TLS unless the broker allows it without)",
                    sasl.mechanism,
                    r.mechanisms.join(", ")
                )))
            }
            ErrorCode::IllegalSaslState => {
                return Err(failed(
                    "this listener does not use SASL (drop the SASL settings, or use the broker's SASL listener)".into(),
                ))
            }
            other => return Err(failed(format!("SaslHandshake answered {other}"))),
        },
        other => return Err(unexpected("SaslHandshake", &other)),
    }
    let Some(mech) = sasl.mechanism.scram() else {
        let msg = encode_plain(&sasl.username, &sasl.password);
        wire.authenticate(msg, &failed).await?;
        return Ok(());
    };
    let mut client = ScramClient::new(mech, &sasl.username, &sasl.password);
    let server_first = wire.authenticate(client.first(), &failed).await?;
    // PBKDF2 with the server's iteration count: off the async threads.
    let (client, client_final) = tokio::task::spawn_blocking(move || {
        let out = client.finish(&server_first);
        (client, out)
    })
    .await
    .map_err(|e| failed(format!("SCRAM task failed: {e}")))?;
    let client_final = client_final.map_err(|e| failed(e.to_string()))?;
    let server_final = wire.authenticate(client_final, &failed).await?;
    client
        .verify(&server_final)
        .map_err(|e| failed(format!("the broker's SCRAM signature does not check: {e}")))
}

fn unexpected(request: &'static str, got: &Response) -> ClientError {
    ClientError::UnexpectedResponse {
        request,
        got: format!("{got:?}"),
    }
}

/// Request/response on the stream before the session's tasks exist.
struct Wire<'a, S> {
    stream: &'a mut S,
    addr: &'a str,
    config: &'a ClientConfig,
    next_id: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<'_, S> {
    /// One SaslAuthenticate: the server's bytes, or the refusal.
    async fn authenticate(
        &mut self,
        message: Vec<u8>,
        failed: &(dyn Fn(String) -> ClientError + Sync),
    ) -> Result<Vec<u8>> {
        let req = Request::SaslAuthenticate(SaslAuthenticateRequest {
            auth_bytes: Bytes::from(message),
        });
        match self.call(&req, ApiKey::SaslAuthenticate).await? {
            Response::SaslAuthenticate(r) if r.error == ErrorCode::None => {
                Ok(r.auth_bytes.to_vec())
            }
            Response::SaslAuthenticate(r) => Err(failed(if r.error_message.is_empty() {
                r.error.to_string()
            } else {
                format!("{} ({})", r.error_message, r.error.name())
            })),
            other => Err(unexpected("SaslAuthenticate", &other)),
        }
    }

    async fn call(&mut self, request: &Request, key: ApiKey) -> Result<Response> {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = BytesMut::new();
        encode_request(id, &self.config.client_id, request, &mut frame);
        let lost = |e: std::io::Error| ClientError::Disconnected {
            addr: self.addr.to_string(),
            reason: format!("during SASL authentication: {e}"),
        };
        self.stream.write_all(&frame).await.map_err(lost)?;
        self.stream.flush().await.map_err(lost)?;
        let len = self.stream.read_u32().await.map_err(lost)? as usize;
        if len > self.config.max_frame_bytes {
            return Err(ClientError::Disconnected {
                addr: self.addr.to_string(),
                reason: format!("a SASL answer of {len} bytes exceeds the frame limit"),
            });
        }
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await.map_err(lost)?;
        let (cid, response) = decode_response(key, Bytes::from(payload))
            .map_err(|e| ClientError::Protocol(std::sync::Arc::new(e)))?;
        if cid != id {
            return Err(unexpected(key.name(), &response));
        }
        match response {
            Response::Error(code) => Err(ClientError::broker(
                code,
                format!("{} request to {}", key.name(), self.addr),
            )),
            r => Ok(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanisms_parse_case_insensitively_and_passwords_stay_hidden() {
        for m in [
            SaslMechanism::Plain,
            SaslMechanism::ScramSha256,
            SaslMechanism::ScramSha512,
        ] {
            assert_eq!(m.name().to_lowercase().parse::<SaslMechanism>(), Ok(m));
        }
        assert!("GSSAPI".parse::<SaslMechanism>().is_err());
        let s = ClientSasl::new(SaslMechanism::ScramSha256, "alice", "hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
