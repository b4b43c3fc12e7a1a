//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server and client,
//! without channel binding.
//!
//! ## Exchange
//!
//! | step | from   | message                                                                 |
//! |------|--------|-------------------------------------------------------------------------|
//! | 1    | client | client-first: `n,,n=<user>,r=<c-nonce>[,<ext>…]`                        |
//! | 2    | server | server-first: `r=<c-nonce><s-nonce>,s=<base64 salt>,i=<iterations>`     |
//! | 3    | client | client-final: `c=<base64 gs2-header>,r=<nonce>[,<ext>…],p=<base64 proof>` |
//! | 4    | server | server-final: `v=<base64 ServerSignature>` (or `e=<error>`)              |
//!
//! The gs2 header (`n,,` here) is `<flag>,[a=<authzid>],`: flag `n` (client
//! does not support channel binding) and `y` (client does, thinks the server
//! does not) are accepted; `p=<cb-name>` is refused with
//! [`AuthError::ChannelBinding`]. The authzid, when present, must equal the
//! username (as Kafka requires). Names are "saslnames": `,` is sent as `=2C`
//! and `=` as `=3D`. Nonces are printable ASCII other than `,`; the
//! client-final nonce must end with the server-first one (Kafka's rule:
//! older librdkafka repeats its own nonce in front of it). A leading
//! `m=` (mandatory extension) is refused; Kafka's `tokenauth=true` extension
//! (delegation tokens) is refused; other extensions are ignored. Every
//! message is at most [`MAX_MESSAGE_LEN`] bytes of UTF-8.
//!
//! ## Keys
//!
//! With `H` the mechanism's hash and `HMAC` over it:
//!
//! ```text
//! SaltedPassword  = PBKDF2-HMAC-H(password, salt, iterations)
//! ClientKey       = HMAC(SaltedPassword, "Client Key")
//! StoredKey       = H(ClientKey)
//! ServerKey       = HMAC(SaltedPassword, "Server Key")
//! AuthMessage     = client-first-bare "," server-first "," client-final-without-proof
//! ClientProof     = ClientKey XOR HMAC(StoredKey, AuthMessage)
//! ServerSignature = HMAC(ServerKey, AuthMessage)
//! ```
//!
//! The server stores only salt, iterations, StoredKey and ServerKey
//! ([`ScramCredential`]); it recovers ClientKey from the proof and checks
//! `H(ClientKey) == StoredKey`. Passwords are used as their UTF-8 bytes
//! without SASLprep normalisation, as Kafka does, so credentials made by
//! either side work with the other.
//!
//! An unknown user gets a server-first with a salt derived from the username
//! by an HMAC under a per-process random key (stable for the process, not
//! guessable from outside) and the default iteration count, then fails at
//! client-final exactly like a wrong password.

use std::num::NonZeroU32;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

use crate::{ct_eq, validate_username, AuthError};

/// Longest accepted SCRAM message, in bytes (either direction).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Longest accepted salt, in bytes.
pub const MAX_SALT_LEN: usize = 1024;
/// Length of a salt made by [`ScramCredential::new`], in bytes.
pub const SALT_LEN: usize = 32;
/// Random bytes in a nonce (base64-encoded on the wire, so 32 characters).
const NONCE_BYTES: usize = 24;

/// A SCRAM hash function.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramMechanism {
    /// Both mechanisms, strongest last.
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name, e.g. `SCRAM-SHA-256`.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism for a SASL name (exact, case-sensitive, as SASL names are).
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Kafka's mechanism code in the *UserScramCredentials APIs (1 = SHA-256, 2 = SHA-512).
    pub fn kafka_type(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The mechanism for a Kafka code (0 = UNKNOWN and others give `None`).
    pub fn from_kafka_type(t: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.kafka_type() == t)
    }

    /// Length of the hash output (and of every key), in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    fn digest_alg(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    fn hmac_alg(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2_alg(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest_alg(), data).as_ref().to_vec()
    }

    fn hmac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac_alg(), key), msg)
            .as_ref()
            .to_vec()
    }

    /// SaltedPassword = Hi(password, salt, i) (RFC 5802): what Kafka's
    /// AlterUserScramCredentials carries instead of the password.
    pub fn salted_password(
        self,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<Vec<u8>, AuthError> {
        let n = NonZeroU32::new(iterations).ok_or(AuthError::Iterations {
            count: iterations,
            min: 1,
            max: u32::MAX,
        })?;
        let mut out = vec![0u8; self.digest_len()];
        pbkdf2::derive(self.pbkdf2_alg(), n, salt, password, &mut out);
        Ok(out)
    }
}

impl std::fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ScramMechanism {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| AuthError::UnknownName {
                kind: "SCRAM mechanism",
                name: s.to_string(),
            })
    }
}

/// Salted credential as stored (never the password): salt, iterations, StoredKey, ServerKey.
///
/// In JSON the byte fields are base64 strings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScramCredential {
    /// The hash function this credential is for.
    pub mechanism: ScramMechanism,
    /// The PBKDF2 salt.
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`: checks a client's proof.
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`: signs the server-final message.
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// Iteration count used when none is given.
    pub const DEFAULT_ITERATIONS: u32 = 4096;
    /// Smallest iteration count a stored credential may have (RFC 7677's floor, and Kafka's).
    pub const MIN_ITERATIONS: u32 = 4096;
    /// Largest iteration count a stored credential may have (Kafka's cap).
    pub const MAX_ITERATIONS: u32 = 16384;

    /// Derives a credential from a password with a fresh random 32-byte salt.
    pub fn new(
        mechanism: ScramMechanism,
        password: &str,
        iterations: u32,
    ) -> Result<Self, AuthError> {
        check_iterations(iterations)?;
        let salt = random_bytes(SALT_LEN)?;
        Self::with_salt(mechanism, password, &salt, iterations)
    }

    /// Derives a credential from a password and a given salt.
    pub fn with_salt(
        mechanism: ScramMechanism,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, AuthError> {
        if password.is_empty() {
            return Err(AuthError::InvalidCredential("empty password"));
        }
        check_iterations(iterations)?;
        check_salt(salt)?;
        let salted = mechanism.salted_password(password.as_bytes(), salt, iterations)?;
        Self::from_salted_password(mechanism, salt.to_vec(), iterations, &salted)
    }

    /// Builds a credential from a SaltedPassword (what Kafka's AlterUserScramCredentials sends).
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salt: Vec<u8>,
        iterations: u32,
        salted_password: &[u8],
    ) -> Result<Self, AuthError> {
        check_iterations(iterations)?;
        check_salt(&salt)?;
        if salted_password.len() != mechanism.digest_len() {
            return Err(AuthError::InvalidCredential(
                "salted password length does not match the mechanism",
            ));
        }
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        Ok(ScramCredential {
            mechanism,
            salt,
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
        })
    }

    /// Checks iteration range, salt length and key lengths.
    pub fn validate(&self) -> Result<(), AuthError> {
        check_iterations(self.iterations)?;
        check_salt(&self.salt)?;
        let n = self.mechanism.digest_len();
        if self.stored_key.len() != n || self.server_key.len() != n {
            return Err(AuthError::InvalidCredential(
                "key length does not match the mechanism",
            ));
        }
        Ok(())
    }

    /// True when `password` derives this credential (runs PBKDF2; used by PLAIN).
    pub fn verify_password(&self, password: &str) -> bool {
        if self.validate().is_err() {
            return false;
        }
        let Ok(salted) =
            self.mechanism
                .salted_password(password.as_bytes(), &self.salt, self.iterations)
        else {
            return false;
        };
        let client_key = self.mechanism.hmac(&salted, b"Client Key");
        ct_eq(&self.mechanism.hash(&client_key), &self.stored_key)
    }
}

fn check_iterations(iterations: u32) -> Result<(), AuthError> {
    let (min, max) = (
        ScramCredential::MIN_ITERATIONS,
        ScramCredential::MAX_ITERATIONS,
    );
    if (min..=max).contains(&iterations) {
        Ok(())
    } else {
        Err(AuthError::Iterations {
            count: iterations,
            min,
            max,
        })
    }
}

fn check_salt(salt: &[u8]) -> Result<(), AuthError> {
    if salt.is_empty() || salt.len() > MAX_SALT_LEN {
        return Err(AuthError::InvalidCredential("salt must be 1 to 1024 bytes"));
    }
    Ok(())
}

fn random_bytes(n: usize) -> Result<Vec<u8>, AuthError> {
    let mut buf = vec![0u8; n];
    // ring's error type carries no detail, so there is no cause to keep.
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| AuthError::Rng)?;
    Ok(buf)
}

fn random_nonce() -> Result<String, AuthError> {
    Ok(B64.encode(random_bytes(NONCE_BYTES)?))
}

/// The per-process key that makes unknown users' fake salts unguessable.
fn process_secret() -> Result<&'static [u8], AuthError> {
    static SECRET: OnceLock<Vec<u8>> = OnceLock::new();
    if SECRET.get().is_none() {
        // A lost race just means another thread's key is used.
        let _ = SECRET.set(random_bytes(32)?);
    }
    SECRET.get().map(Vec::as_slice).ok_or(AuthError::Rng)
}

/// A credential for a user that does not exist: deterministic per
/// (mechanism, username) within the process, and matching no password in
/// practice (callers still reject it explicitly).
pub(crate) fn fake_credential(
    mechanism: ScramMechanism,
    username: &str,
) -> Result<ScramCredential, AuthError> {
    let key = hmac::Key::new(hmac::HMAC_SHA512, process_secret()?);
    let derive = |label: &str, len: usize| {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(label.as_bytes());
        ctx.update(mechanism.name().as_bytes());
        ctx.update(username.as_bytes());
        let tag = ctx.sign();
        tag.as_ref()[..len.min(tag.as_ref().len())].to_vec()
    };
    let n = mechanism.digest_len();
    Ok(ScramCredential {
        mechanism,
        salt: derive("salt\0", SALT_LEN),
        iterations: ScramCredential::DEFAULT_ITERATIONS,
        stored_key: derive("stored\0", n),
        server_key: derive("server\0", n),
    })
}

/// Bounds a message and checks it is UTF-8.
fn message_str(msg: &[u8]) -> Result<&str, AuthError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(AuthError::TooLarge {
            len: msg.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    std::str::from_utf8(msg).map_err(AuthError::NotUtf8)
}

fn decode_b64(s: &str, what: &'static str) -> Result<Vec<u8>, AuthError> {
    // The input is already bounded by MAX_MESSAGE_LEN, so is the output.
    B64.decode(s).map_err(|_| AuthError::Malformed(what))
}

/// Encodes a name as a SCRAM saslname (`=` → `=3D`, `,` → `=2C`).
pub fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// Decodes a SCRAM saslname; any `=` not starting `=2C` or `=3D` is an error.
pub fn decode_saslname(s: &str) -> Result<String, AuthError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3);
        out.push(match esc {
            Some("=2C") => ',',
            Some("=3D") => '=',
            _ => return Err(AuthError::Malformed("bad '=' escape in a name")),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn check_nonce(nonce: &str) -> Result<(), AuthError> {
    if nonce.is_empty() {
        return Err(AuthError::Malformed("empty nonce"));
    }
    if !nonce
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(AuthError::Malformed("nonce is not printable ASCII"));
    }
    Ok(())
}

/// Checks trailing `key=value` extensions, refusing the ones we cannot honour.
fn check_extensions<'a>(fields: impl Iterator<Item = &'a str>) -> Result<(), AuthError> {
    for ext in fields {
        let (k, v) = ext
            .split_once('=')
            .ok_or(AuthError::Malformed("extension is not key=value"))?;
        if k.is_empty() {
            return Err(AuthError::Malformed("extension with an empty key"));
        }
        if k == "tokenauth" && v.eq_ignore_ascii_case("true") {
            return Err(AuthError::Unsupported("delegation-token authentication"));
        }
    }
    Ok(())
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// A parsed client-first message, borrowing from it.
struct ClientFirst<'a> {
    gs2_header: &'a str,
    username: String,
    client_nonce: &'a str,
    bare: &'a str,
}

fn parse_client_first(text: &str) -> Result<ClientFirst<'_>, AuthError> {
    let (flag, rest) = text
        .split_once(',')
        .ok_or(AuthError::Malformed("client-first has no gs2 header"))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err(AuthError::ChannelBinding),
        _ => return Err(AuthError::Malformed("unknown gs2 channel-binding flag")),
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or(AuthError::Malformed("client-first has no gs2 header"))?;
    let gs2_header = text
        .get(..flag.len() + authzid.len() + 2)
        .ok_or(AuthError::Malformed("client-first has no gs2 header"))?;
    let authzid = if authzid.is_empty() {
        None
    } else {
        let a = authzid
            .strip_prefix("a=")
            .ok_or(AuthError::Malformed("gs2 authzid must start with a="))?;
        Some(decode_saslname(a)?)
    };
    let mut fields = bare.split(',');
    let user = fields.next().unwrap_or_default();
    if user.starts_with("m=") {
        return Err(AuthError::Unsupported("mandatory SCRAM extension"));
    }
    let user = user
        .strip_prefix("n=")
        .ok_or(AuthError::Malformed("client-first has no n=<username>"))?;
    let username = decode_saslname(user)?;
    validate_username(&username)?;
    let client_nonce = fields
        .next()
        .and_then(|f| f.strip_prefix("r="))
        .ok_or(AuthError::Malformed("client-first has no r=<nonce>"))?;
    check_nonce(client_nonce)?;
    check_extensions(fields)?;
    if authzid.is_some_and(|a| a != username) {
        return Err(AuthError::AuthorizationId);
    }
    Ok(ClientFirst {
        gs2_header,
        username,
        client_nonce,
        bare,
    })
}

/// What the server remembers between server-first and client-final.
struct ServerPending {
    username: String,
    credential: ScramCredential,
    /// False for the fake credential of an unknown user: fail even if the proof matched.
    known: bool,
    gs2_header: String,
    nonce: String,
    /// `client-first-bare "," server-first ","`: the AuthMessage minus the client-final part.
    auth_prefix: String,
}

enum ServerState {
    Initial,
    Pending(Box<ServerPending>),
    /// Finished, or failed: either way nothing more is accepted.
    Over,
}

/// Server side of one SCRAM exchange.
pub struct ScramServer {
    mechanism: ScramMechanism,
    state: ServerState,
    /// Test vectors need a known server nonce; `None` means random.
    fixed_nonce: Option<String>,
}

impl ScramServer {
    /// A server awaiting client-first for `mechanism`.
    pub fn new(mechanism: ScramMechanism) -> Self {
        ScramServer {
            mechanism,
            state: ServerState::Initial,
            fixed_nonce: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn with_nonce(mechanism: ScramMechanism, server_nonce: &str) -> Self {
        ScramServer {
            fixed_nonce: Some(server_nonce.to_string()),
            ..Self::new(mechanism)
        }
    }

    /// The mechanism this exchange runs.
    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// True until client-first has been processed.
    pub(crate) fn awaiting_first(&self) -> bool {
        matches!(self.state, ServerState::Initial)
    }

    /// client-first -> server-first. `lookup(username)` returns the user's credential for this mechanism (None = unknown user: still answer with a fake salt/iterations derived deterministically from the username so unknown and known users look alike, then fail at client-final).
    pub fn first(
        &mut self,
        client_first: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<Vec<u8>, AuthError> {
        if !matches!(
            std::mem::replace(&mut self.state, ServerState::Over),
            ServerState::Initial
        ) {
            return Err(AuthError::OutOfOrder(
                "client-first after the exchange began",
            ));
        }
        let text = message_str(client_first)?;
        let cf = parse_client_first(text)?;
        let (credential, known) = match lookup(&cf.username) {
            Some(c) if c.mechanism == self.mechanism && c.validate().is_ok() => (c, true),
            _ => (fake_credential(self.mechanism, &cf.username)?, false),
        };
        let server_nonce = match &self.fixed_nonce {
            Some(n) => n.clone(),
            None => random_nonce()?,
        };
        let nonce = format!("{}{}", cf.client_nonce, server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        self.state = ServerState::Pending(Box::new(ServerPending {
            auth_prefix: format!("{},{},", cf.bare, server_first),
            username: cf.username,
            credential,
            known,
            gs2_header: cf.gs2_header.to_string(),
            nonce,
        }));
        Ok(server_first.into_bytes())
    }

    /// client-final -> (authenticated username, server-final "v=...").
    pub fn finish(&mut self, client_final: &[u8]) -> Result<(String, Vec<u8>), AuthError> {
        let ServerState::Pending(p) = std::mem::replace(&mut self.state, ServerState::Over) else {
            return Err(AuthError::OutOfOrder(
                "client-final without a pending client-first",
            ));
        };
        let m = self.mechanism;
        let text = message_str(client_final)?;
        let (without_proof, proof) = text
            .rsplit_once(',')
            .ok_or(AuthError::Malformed("client-final has no proof"))?;
        let proof = proof
            .strip_prefix("p=")
            .ok_or(AuthError::Malformed("client-final must end with p=<proof>"))?;
        let mut fields = without_proof.split(',');
        let cbind = fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .ok_or(AuthError::Malformed("client-final must start with c="))?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or(AuthError::Malformed("client-final has no r=<nonce>"))?;
        check_extensions(fields)?;
        if decode_b64(cbind, "channel binding is not base64")? != p.gs2_header.as_bytes() {
            return Err(AuthError::Malformed(
                "channel-binding data does not match the gs2 header",
            ));
        }
        // Kafka checks only that the nonce ends with the server-first one,
        // and older librdkafka (2.0.2, Debian's kcat) relies on it: it sends
        // its own nonce again in front (`r=<c-nonce><c-nonce><s-nonce>`). The proof covers
        // the client-final as sent, so this admits no replay: the server's
        // fresh nonce must still be there and signed.
        if !nonce.ends_with(p.nonce.as_str()) {
            return Err(AuthError::Malformed("nonce does not match"));
        }
        let proof = decode_b64(proof, "proof is not base64")?;
        if proof.len() != m.digest_len() {
            return Err(AuthError::Malformed("proof has the wrong length"));
        }
        let auth_message = format!("{}{}", p.auth_prefix, without_proof);
        let client_signature = m.hmac(&p.credential.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &client_signature);
        let matches = ct_eq(&m.hash(&client_key), &p.credential.stored_key);
        if !(matches && p.known) {
            return Err(AuthError::AuthenticationFailed);
        }
        let server_signature = m.hmac(&p.credential.server_key, auth_message.as_bytes());
        Ok((
            p.username,
            format!("v={}", B64.encode(server_signature)).into_bytes(),
        ))
    }
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            ServerState::Initial => "awaiting client-first",
            ServerState::Pending(_) => "awaiting client-final",
            ServerState::Over => "over",
        };
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mechanism)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

enum ClientState {
    Initial,
    SentFirst { bare: String },
    SentFinal { server_signature: Vec<u8> },
    Failed,
}

/// Client side of one SCRAM exchange (our client library and CLI use it).
pub struct ScramClient {
    mechanism: ScramMechanism,
    username: String,
    password: String,
    /// `None` when the random generator failed; `finish` then reports it.
    nonce: Option<String>,
    state: ClientState,
}

impl ScramClient {
    /// Smallest iteration count the client accepts from a server.
    pub const MIN_ITERATIONS: u32 = 4096;
    /// Largest iteration count the client accepts, so a hostile server cannot make it spin.
    pub const MAX_ITERATIONS: u32 = 100_000;

    /// A client for `username` / `password` with a fresh random nonce.
    pub fn new(mechanism: ScramMechanism, username: &str, password: &str) -> Self {
        ScramClient {
            mechanism,
            username: username.to_string(),
            password: password.to_string(),
            nonce: random_nonce().ok(),
            state: ClientState::Initial,
        }
    }

    #[cfg(test)]
    pub(crate) fn with_nonce(
        mechanism: ScramMechanism,
        username: &str,
        password: &str,
        nonce: &str,
    ) -> Self {
        ScramClient {
            nonce: Some(nonce.to_string()),
            ..Self::new(mechanism, username, password)
        }
    }

    /// The client-first message (`n,,n=<user>,r=<nonce>`); restarts the exchange.
    pub fn first(&mut self) -> Vec<u8> {
        let bare = format!(
            "n={},r={}",
            encode_saslname(&self.username),
            self.nonce.as_deref().unwrap_or_default()
        );
        let msg = format!("n,,{bare}").into_bytes();
        self.state = ClientState::SentFirst { bare };
        msg
    }

    /// server-first -> client-final (runs PBKDF2 with the server's salt and count).
    pub fn finish(&mut self, server_first: &[u8]) -> Result<Vec<u8>, AuthError> {
        let ClientState::SentFirst { bare } =
            std::mem::replace(&mut self.state, ClientState::Failed)
        else {
            return Err(AuthError::OutOfOrder("server-first before client-first"));
        };
        let m = self.mechanism;
        let client_nonce = self.nonce.as_deref().ok_or(AuthError::Rng)?;
        let text = message_str(server_first)?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(AuthError::ServerError(e.to_string()));
        }
        let mut fields = text.split(',');
        let first = fields.next().unwrap_or_default();
        if first.starts_with("m=") {
            return Err(AuthError::Unsupported("mandatory SCRAM extension"));
        }
        let nonce = first
            .strip_prefix("r=")
            .ok_or(AuthError::Malformed("server-first has no r=<nonce>"))?;
        check_nonce(nonce)?;
        if nonce.len() <= client_nonce.len() || !nonce.starts_with(client_nonce) {
            return Err(AuthError::Malformed(
                "server nonce does not extend the client nonce",
            ));
        }
        let salt = fields
            .next()
            .and_then(|f| f.strip_prefix("s="))
            .ok_or(AuthError::Malformed("server-first has no s=<salt>"))?;
        let salt = decode_b64(salt, "salt is not base64")?;
        check_salt(&salt)?;
        let iterations: u32 = fields
            .next()
            .and_then(|f| f.strip_prefix("i="))
            .ok_or(AuthError::Malformed("server-first has no i=<iterations>"))?
            .parse()
            .map_err(|_| AuthError::Malformed("iteration count is not a number"))?;
        if !(Self::MIN_ITERATIONS..=Self::MAX_ITERATIONS).contains(&iterations) {
            return Err(AuthError::Iterations {
                count: iterations,
                min: Self::MIN_ITERATIONS,
                max: Self::MAX_ITERATIONS,
            });
        }
        check_extensions(fields)?;

        let salted = m.salted_password(self.password.as_bytes(), &salt, iterations)?;
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        let server_key = m.hmac(&salted, b"Server Key");
        // "biws" is base64("n,,"): our gs2 header, no channel binding.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{bare},{text},{without_proof}");
        let proof = xor(&client_key, &m.hmac(&stored_key, auth_message.as_bytes()));
        self.state = ClientState::SentFinal {
            server_signature: m.hmac(&server_key, auth_message.as_bytes()),
        };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks server-final: `v=` must carry the expected signature; `e=` is reported as an error.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), AuthError> {
        let ClientState::SentFinal { server_signature } = &self.state else {
            return Err(AuthError::OutOfOrder("server-final before client-final"));
        };
        let text = message_str(server_final)?;
        let first = text.split(',').next().unwrap_or_default();
        if let Some(e) = first.strip_prefix("e=") {
            return Err(AuthError::ServerError(e.to_string()));
        }
        let v = first
            .strip_prefix("v=")
            .ok_or(AuthError::Malformed("server-final has no v=<signature>"))?;
        if ct_eq(&decode_b64(v, "signature is not base64")?, server_signature) {
            Ok(())
        } else {
            Err(AuthError::ServerSignature)
        }
    }
}

impl std::fmt::Debug for ScramClient {
    // Hand-written so the password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Serde for byte fields as base64 strings.
mod b64 {
    use super::B64;
    use base64::Engine as _;

    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(bytes))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        B64.decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M256: ScramMechanism = ScramMechanism::Sha256;

    /// RFC 7677 section 3.
    #[test]
    fn rfc7677_vector() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = ScramCredential::with_salt(M256, "pencil", &salt, 4096).unwrap();
        let mut client = ScramClient::with_nonce(M256, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
        let mut server = ScramServer::with_nonce(M256, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");

        let cf = client.first();
        assert_eq!(cf, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let sf = server
            .first(&cf, |u| (u == "user").then(|| cred.clone()))
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&sf).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let cfin = client.finish(&sf).unwrap();
        assert_eq!(
            std::str::from_utf8(&cfin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let (user, sfin) = server.finish(&cfin).unwrap();
        assert_eq!(user, "user");
        assert_eq!(
            std::str::from_utf8(&sfin).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        client.verify(&sfin).unwrap();
        assert!(cred.verify_password("pencil"));
        assert!(!cred.verify_password("pencil!"));
    }

    fn round_trip(
        m: ScramMechanism,
        stored: Option<&ScramCredential>,
        user: &str,
        password: &str,
    ) -> Result<String, AuthError> {
        let mut client = ScramClient::new(m, user, password);
        let mut server = ScramServer::new(m);
        let sf = server.first(&client.first(), |u| {
            assert_eq!(u, user);
            stored.cloned()
        })?;
        let cfin = client.finish(&sf)?;
        let (name, sfin) = server.finish(&cfin)?;
        client.verify(&sfin)?;
        Ok(name)
    }

    #[test]
    fn round_trips_both_mechanisms() {
        for m in ScramMechanism::ALL {
            let cred = ScramCredential::new(m, "s3cret", 4096).unwrap();
            assert_eq!(cred.salt.len(), SALT_LEN);
            assert_eq!(cred.stored_key.len(), m.digest_len());
            assert_eq!(
                round_trip(m, Some(&cred), "alice", "s3cret").unwrap(),
                "alice"
            );
            // A name needing saslname escapes.
            assert_eq!(
                round_trip(m, Some(&cred), "a=b,c", "s3cret").unwrap(),
                "a=b,c"
            );
            assert!(matches!(
                round_trip(m, Some(&cred), "alice", "wrong"),
                Err(AuthError::AuthenticationFailed)
            ));
            assert!(matches!(
                round_trip(m, None, "nobody", "s3cret"),
                Err(AuthError::AuthenticationFailed)
            ));
        }
    }

    #[test]
    fn credential_of_the_other_mechanism_is_not_used() {
        let cred = ScramCredential::new(ScramMechanism::Sha512, "pw", 4096).unwrap();
        assert!(matches!(
            round_trip(M256, Some(&cred), "alice", "pw"),
            Err(AuthError::AuthenticationFailed)
        ));
    }

    #[test]
    fn unknown_user_looks_like_a_known_one() {
        let mut a = ScramServer::new(M256);
        let mut b = ScramServer::new(M256);
        let sf1 = a.first(b"n,,n=ghost,r=abc", |_| None).unwrap();
        let sf2 = b.first(b"n,,n=ghost,r=abc", |_| None).unwrap();
        let salt = |sf: &[u8]| {
            let s = std::str::from_utf8(sf).unwrap().to_string();
            s.split(',').nth(1).unwrap().to_string()
        };
        // Same fake salt each time, same shape as a real one.
        assert_eq!(salt(&sf1), salt(&sf2));
        assert!(std::str::from_utf8(&sf1).unwrap().ends_with(",i=4096"));
        assert_eq!(B64.decode(&salt(&sf1)[2..]).unwrap().len(), SALT_LEN);
        let mut other = ScramServer::new(M256);
        let sf3 = other.first(b"n,,n=ghost2,r=abc", |_| None).unwrap();
        assert_ne!(salt(&sf1), salt(&sf3));
    }

    fn pending_server(cred: &ScramCredential) -> (ScramClient, ScramServer, Vec<u8>) {
        let mut client = ScramClient::new(M256, "alice", "pw");
        let mut server = ScramServer::new(M256);
        let sf = server
            .first(&client.first(), |_| Some(cred.clone()))
            .unwrap();
        let cfin = client.finish(&sf).unwrap();
        (client, server, cfin)
    }

    #[test]
    fn tampered_client_final_is_refused() {
        let cred = ScramCredential::new(M256, "pw", 4096).unwrap();
        let (_, _, good) = pending_server(&cred);
        let good = String::from_utf8(good).unwrap();
        let (head, proof) = good.rsplit_once(",p=").unwrap();
        let mut p = B64.decode(proof).unwrap();
        p[0] ^= 1;
        let bad_proof = format!("{head},p={}", B64.encode(&p));
        let bad_nonce = good.replacen(",r=", ",r=X", 1);
        let bad_cb = good.replacen("c=biws", "c=eSws", 1); // "y,,"
        let short_proof = format!("{head},p={}", B64.encode(&p[..16]));
        let cases: Vec<(&str, String)> = vec![
            ("proof", bad_proof),
            ("nonce", bad_nonce),
            ("channel binding", bad_cb),
            ("short proof", short_proof),
            ("no proof", head.to_string()),
            ("truncated", good[..good.len() / 2].to_string()),
            ("empty", String::new()),
            ("bad base64", format!("{head},p=!!!")),
        ];
        for (what, msg) in cases {
            let (_, mut server, _) = pending_server(&cred);
            assert!(server.finish(msg.as_bytes()).is_err(), "{what}");
            // A failed exchange stays failed.
            assert!(matches!(
                server.finish(good.as_bytes()),
                Err(AuthError::OutOfOrder(_))
            ));
        }
        let (client, mut server, cfin) = pending_server(&cred);
        let (_, sfin) = server.finish(&cfin).unwrap();
        client.verify(&sfin).unwrap();
        let mut forged = B64.decode(&sfin[2..]).unwrap();
        forged[0] ^= 1;
        let forged = format!("v={}", B64.encode(forged));
        assert!(matches!(
            client.verify(forged.as_bytes()),
            Err(AuthError::ServerSignature)
        ));
    }

    /// librdkafka 2.0 (Debian's kcat) sends `r=<c-nonce><c-nonce><s-nonce>`
    /// in client-final; Kafka accepts any nonce ending with the server-first
    /// one, and so do we, as long as the proof covers what was sent.
    #[test]
    fn client_final_nonce_with_a_prefix_is_accepted_when_signed() {
        let cred = ScramCredential::new(M256, "pw", 4096).unwrap();
        let mut server = ScramServer::new(M256);
        let cf = b"n,,n=alice,r=cnonce";
        let sf = server.first(cf, |_| Some(cred.clone())).unwrap();
        let sf = String::from_utf8(sf).unwrap();
        let nonce = sf.split(',').next().unwrap().strip_prefix("r=").unwrap();
        let salted = M256
            .salted_password(b"pw", &cred.salt, cred.iterations)
            .unwrap();
        let client_key = M256.hmac(&salted, b"Client Key");
        let without_proof = format!("c=biws,r=cnonce{nonce}");
        let auth = format!("n=alice,r=cnonce,{sf},{without_proof}");
        let proof = xor(
            &client_key,
            &M256.hmac(&M256.hash(&client_key), auth.as_bytes()),
        );
        let cfin = format!("{without_proof},p={}", B64.encode(proof));
        let (user, _) = server.finish(cfin.as_bytes()).unwrap();
        assert_eq!(user, "alice");
        // A nonce that does not end with the server's is still refused.
        let mut server = ScramServer::new(M256);
        let sf = server.first(cf, |_| Some(cred.clone())).unwrap();
        let sf = String::from_utf8(sf).unwrap();
        let nonce = sf.split(',').next().unwrap().strip_prefix("r=").unwrap();
        let cut = format!("c=biws,r={},p=AAAA", &nonce[..nonce.len() - 1]);
        assert!(matches!(
            server.finish(cut.as_bytes()),
            Err(AuthError::Malformed("nonce does not match"))
        ));
    }

    #[test]
    fn bad_client_first_is_refused() {
        let cases: &[&[u8]] = &[
            b"",
            b"n",
            b"n,",
            b"n,,",
            b"n,,n=",
            b"n,,n=alice",
            b"n,,n=alice,r=",
            b"n,,r=abc,n=alice",
            b"x,,n=alice,r=abc",
            b"n,,m=ext,n=alice,r=abc",
            b"n,a=bob,n=alice,r=abc",
            b"n,b=alice,n=alice,r=abc",
            b"n,,n=al=ice,r=abc",
            b"n,,n=al=2,r=abc",
            b"n,,n=alice,r=ab\x7fc",
            b"n,,n=alice,r=abc,tokenauth=true",
            b"n,,n=alice,r=abc,junk",
            b"n,,n=al\xffice,r=abc",
            b"n,,n=a\nb,r=abc",
        ];
        for c in cases {
            let mut s = ScramServer::new(M256);
            assert!(
                s.first(c, |_| None).is_err(),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
        let mut s = ScramServer::new(M256);
        assert!(matches!(
            s.first(b"p=tls-unique,,n=alice,r=abc", |_| None),
            Err(AuthError::ChannelBinding)
        ));
        let mut s = ScramServer::new(M256);
        assert!(matches!(
            s.first(b"n,,n=a\xffb,r=abc", |_| None),
            Err(AuthError::NotUtf8(_))
        ));
        let big = format!("n,,n=alice,r={}", "a".repeat(MAX_MESSAGE_LEN));
        let mut s = ScramServer::new(M256);
        assert!(matches!(
            s.first(big.as_bytes(), |_| None),
            Err(AuthError::TooLarge { .. })
        ));
        // Accepted variants: "y,," and a matching authzid, extensions.
        for ok in [
            &b"y,,n=alice,r=abc"[..],
            b"n,a=alice,n=alice,r=abc",
            b"n,,n=alice,r=abc,x=1",
        ] {
            let mut s = ScramServer::new(M256);
            assert!(s.first(ok, |_| None).is_ok());
        }
    }

    #[test]
    fn y_flag_round_trip_needs_matching_channel_binding() {
        let cred = ScramCredential::new(M256, "pw", 4096).unwrap();
        let mut server = ScramServer::new(M256);
        let sf = server
            .first(b"y,,n=alice,r=abc", |_| Some(cred.clone()))
            .unwrap();
        let sf = String::from_utf8(sf).unwrap();
        let nonce = sf.split(',').next().unwrap();
        // Build a proper client-final for the "y,," header by hand.
        let salted = M256
            .salted_password(b"pw", &cred.salt, cred.iterations)
            .unwrap();
        let client_key = M256.hmac(&salted, b"Client Key");
        let without = format!("c={},{nonce}", B64.encode("y,,"));
        let am = format!("n=alice,r=abc,{sf},{without}");
        let proof = xor(&client_key, &M256.hmac(&cred.stored_key, am.as_bytes()));
        let msg = format!("{without},p={}", B64.encode(proof));
        let (user, _) = server.finish(msg.as_bytes()).unwrap();
        assert_eq!(user, "alice");
    }

    #[test]
    fn out_of_order_calls() {
        let mut s = ScramServer::new(M256);
        assert!(matches!(s.finish(b"c=biws"), Err(AuthError::OutOfOrder(_))));
        let mut s = ScramServer::new(M256);
        s.first(b"n,,n=a,r=b", |_| None).unwrap();
        assert!(matches!(
            s.first(b"n,,n=a,r=b", |_| None),
            Err(AuthError::OutOfOrder(_))
        ));
        let mut c = ScramClient::new(M256, "a", "b");
        assert!(matches!(c.finish(b"r=x"), Err(AuthError::OutOfOrder(_))));
        assert!(matches!(c.verify(b"v=x"), Err(AuthError::OutOfOrder(_))));
    }

    #[test]
    fn client_refuses_bad_server_first() {
        let mk = || {
            let mut c = ScramClient::with_nonce(M256, "alice", "pw", "cnonce");
            c.first();
            c
        };
        let cases: &[&str] = &[
            "",
            "e=other-error",
            "r=cnonce,s=QUJD,i=4096",      // nonce not extended
            "r=other123,s=QUJD,i=4096",    // not our prefix
            "r=cnonceX,s=,i=4096",         // empty salt
            "r=cnonceX,s=***,i=4096",      // bad base64
            "r=cnonceX,s=QUJD,i=1",        // too few iterations
            "r=cnonceX,s=QUJD,i=99999999", // too many
            "r=cnonceX,s=QUJD,i=-1",
            "r=cnonceX,s=QUJD",
            "m=x,r=cnonceX,s=QUJD,i=4096",
        ];
        for c in cases {
            assert!(mk().finish(c.as_bytes()).is_err(), "{c}");
        }
        assert!(matches!(
            mk().finish(b"e=unknown-user"),
            Err(AuthError::ServerError(e)) if e == "unknown-user"
        ));
        let mut c = mk();
        c.finish(b"r=cnonceX,s=QUJD,i=4096").unwrap();
        assert!(matches!(
            c.verify(b"e=invalid-proof"),
            Err(AuthError::ServerError(_))
        ));
        assert!(matches!(
            c.verify(b"v=AAAA"),
            Err(AuthError::ServerSignature)
        ));
        assert!(c.verify(b"x=1").is_err());
    }

    #[test]
    fn credential_constructors_validate() {
        assert!(ScramCredential::new(M256, "pw", 4095).is_err());
        assert!(ScramCredential::new(M256, "pw", 16385).is_err());
        assert!(ScramCredential::new(M256, "", 4096).is_err());
        assert!(ScramCredential::with_salt(M256, "pw", &[], 4096).is_err());
        assert!(ScramCredential::from_salted_password(M256, vec![1], 4096, &[0; 31]).is_err());
        let salt = vec![7u8; 16];
        let salted = M256.salted_password(b"pw", &salt, 8192).unwrap();
        let a = ScramCredential::from_salted_password(M256, salt.clone(), 8192, &salted).unwrap();
        let b = ScramCredential::with_salt(M256, "pw", &salt, 8192).unwrap();
        assert_eq!(a, b);
        let mut broken = a.clone();
        broken.stored_key.pop();
        assert!(broken.validate().is_err());
        assert!(!broken.verify_password("pw"));
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains(&B64.encode(&salt)));
        assert_eq!(serde_json::from_str::<ScramCredential>(&json).unwrap(), a);
    }

    #[test]
    fn mechanism_names_and_codes() {
        for m in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::from_name(m.name()), Some(m));
            assert_eq!(ScramMechanism::from_kafka_type(m.kafka_type()), Some(m));
            assert_eq!(m.to_string().parse::<ScramMechanism>().unwrap(), m);
        }
        assert_eq!(ScramMechanism::Sha256.kafka_type(), 1);
        assert_eq!(ScramMechanism::Sha512.kafka_type(), 2);
        assert_eq!(ScramMechanism::from_kafka_type(0), None);
        assert_eq!(ScramMechanism::from_name("scram-sha-256"), None);
        assert_eq!(ScramMechanism::from_name("PLAIN"), None);
    }

    #[test]
    fn saslnames() {
        for n in ["plain", "a,b", "a=b", "=2C", ",,==", "ünï"] {
            assert_eq!(decode_saslname(&encode_saslname(n)).unwrap(), n);
        }
        assert_eq!(encode_saslname("a=,"), "a=3D=2C");
        for bad in ["=", "=2", "=2c", "=41", "a=é"] {
            assert!(decode_saslname(bad).is_err(), "{bad}");
        }
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn server_never_panics(first in proptest::collection::vec(any::<u8>(), 0..200),
                                   fin in proptest::collection::vec(any::<u8>(), 0..200)) {
                let mut s = ScramServer::new(M256);
                let _ = s.first(&first, |_| None);
                let _ = s.finish(&fin);
                let mut s = ScramServer::new(ScramMechanism::Sha512);
                if s.first(b"n,,n=alice,r=abc", |_| None).is_ok() {
                    let _ = s.finish(&fin);
                }
            }

            #[test]
            fn server_survives_mutated_messages(pos in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
                let cred = ScramCredential::with_salt(M256, "pw", b"salt", 4096).unwrap();
                let mut client = ScramClient::with_nonce(M256, "alice", "pw", "cn");
                let mut cf = client.first();
                let i = pos % cf.len();
                cf[i] = byte;
                let mut server = ScramServer::with_nonce(M256, "sn");
                if let Ok(sf) = server.first(&cf, |_| Some(cred.clone())) {
                    let mut client = ScramClient::with_nonce(M256, "alice", "pw", "cn");
                    client.first();
                    if let Ok(mut fin) = client.finish(&sf) {
                        let i = pos % fin.len();
                        fin[i] ^= byte;
                        fin.truncate(cut % (fin.len() + 1));
                        let _ = server.finish(&fin);
                    }
                }
            }

            #[test]
            fn client_never_panics(sf in proptest::collection::vec(any::<u8>(), 0..200),
                                   sfin in proptest::collection::vec(any::<u8>(), 0..200)) {
                let mut c = ScramClient::with_nonce(M256, "alice", "pw", "cn");
                c.first();
                let _ = c.finish(&sf);
                let _ = c.verify(&sfin);
            }
        }
    }
}
