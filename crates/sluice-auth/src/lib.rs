//! Sluice security logic: who a client is, what it may do, and how fast.
//!
//! This crate is pure logic with no networking: the broker's front ends
//! (native and Kafka protocols) feed it the bytes of SASL exchanges, ask it
//! authorization questions on every request and charge usage to quotas; the
//! cluster replicates its [`store::SecurityCommand`]s through Raft.
//!
//! Layout:
//! - [`scram`]: SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677), server
//!   and client, and the salted [`scram::ScramCredential`] that is stored
//!   instead of a password.
//! - [`plain`]: the SASL PLAIN message (RFC 4616).
//! - [`sasl`]: one server-side authentication session, any mechanism,
//!   ending in a principal `User:<name>`.
//! - [`acl`]: Kafka's ACL model with its wire codes, filters, and the
//!   indexed [`acl::Authorizer`].
//! - [`quota`]: Kafka's quota entities and precedence, and the
//!   [`quota::QuotaManager`] that turns usage into throttle times.
//! - [`store`]: the security metadata ([`store::SecurityState`]), the
//!   deterministic commands that change it, and the single-node file store.
//! - [`AuthError`]: the crate's one error type.
//!
//! Everything that comes from a client is treated as hostile: lengths are
//! bounded before anything is allocated for them, text must be UTF-8, and
//! secrets are compared in constant time.

#![warn(missing_docs)]

pub mod acl;
mod error;
pub mod plain;
pub mod quota;
pub mod sasl;
pub mod scram;
pub mod store;

pub use error::AuthError;

/// Longest accepted username, in bytes.
pub const MAX_USERNAME_LEN: usize = 1024;

/// Checks a username: 1 to [`MAX_USERNAME_LEN`] bytes, no control characters.
pub fn validate_username(name: &str) -> Result<(), AuthError> {
    if name.is_empty() {
        return Err(AuthError::InvalidUsername("empty"));
    }
    if name.len() > MAX_USERNAME_LEN {
        return Err(AuthError::InvalidUsername("longer than 1024 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(AuthError::InvalidUsername("contains control characters"));
    }
    Ok(())
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_basics() {
        assert!(ct_eq(b"", b""));
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<acl::Authorizer>();
        check::<quota::QuotaManager>();
        check::<store::SecurityState>();
        check::<sasl::SaslSession>();
        check::<scram::ScramClient>();
        check::<AuthError>();
    }

    #[test]
    fn usernames() {
        assert!(validate_username("alice").is_ok());
        assert!(validate_username("ünïcode=,x").is_ok());
        assert!(validate_username("").is_err());
        assert!(validate_username("a\nb").is_err());
        assert!(validate_username(&"x".repeat(MAX_USERNAME_LEN + 1)).is_err());
    }
}
