//! [`AuthError`], the one error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong in authentication, authorization, quotas and
/// the security store.
///
/// Messages built from client input never echo the input back (it is
/// hostile and may be large); they name what was wrong instead.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A SASL message longer than the mechanism allows.
    #[error("SASL message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Length received.
        len: usize,
        /// Largest accepted length.
        max: usize,
    },
    /// A SASL message that is not UTF-8.
    #[error("SASL message is not valid UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// A SASL message that does not follow the mechanism's grammar.
    #[error("malformed SASL message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding (`p=` gs2 flag), which we do not offer.
    #[error("SCRAM channel binding is not supported")]
    ChannelBinding,
    /// A feature of the mechanism we do not implement (mandatory extension, delegation tokens).
    #[error("unsupported SASL feature: {0}")]
    Unsupported(&'static str),
    /// The authorization identity differs from the authenticated user.
    #[error("authorization id must be empty or equal to the username")]
    AuthorizationId,
    /// Wrong password, wrong proof or unknown user (deliberately indistinguishable).
    #[error("authentication failed: invalid credentials")]
    AuthenticationFailed,
    /// A message arrived in a state that does not expect it (or after a failure).
    #[error("SASL exchange out of order: {0}")]
    OutOfOrder(&'static str),
    /// The SCRAM server ended the exchange with `e=<value>`.
    #[error("server refused authentication: {0}")]
    ServerError(String),
    /// The SCRAM server's signature is wrong: it does not know our credential.
    #[error("server signature mismatch: the server could not prove it knows the credential")]
    ServerSignature,
    /// A PBKDF2 iteration count outside the accepted range.
    #[error("iteration count {count} outside {min}..={max}")]
    Iterations {
        /// Count given.
        count: u32,
        /// Smallest accepted.
        min: u32,
        /// Largest accepted.
        max: u32,
    },
    /// A SCRAM credential whose salt, iteration count or key lengths are unusable.
    #[error("invalid SCRAM credential: {0}")]
    InvalidCredential(&'static str),
    /// A username that is empty, too long, or contains control characters.
    #[error("invalid username: {0}")]
    InvalidUsername(&'static str),
    /// An ACL binding that cannot be stored (see `AclBinding::validate`).
    #[error("invalid ACL binding: {0}")]
    InvalidAcl(&'static str),
    /// A quota entity or value that cannot be stored.
    #[error("invalid quota: {0}")]
    InvalidQuota(&'static str),
    /// A name (`read`, `topic`, `SCRAM-SHA-256`, …) that parses to nothing.
    #[error("unknown {kind} {name:?}")]
    UnknownName {
        /// What was being parsed.
        kind: &'static str,
        /// The text given.
        name: String,
    },
    /// The system random number generator failed (ring reports no detail).
    #[error("system random number generator failed")]
    Rng,
    /// A file-system operation on the security store failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The security store file failed its header or checksum check.
    #[error("security store {path} is corrupt ({reason}); refusing to start with an empty state — restore it from a backup or another node")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// The store's JSON body passed its checksum but does not decode (or the state does not encode).
    #[error("security store {path}: JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An earlier write failed after the rename, so disk and memory may differ.
    #[error("security store {path} is poisoned by an earlier failed write; reopen it")]
    Poisoned {
        /// The file.
        path: PathBuf,
    },
}
