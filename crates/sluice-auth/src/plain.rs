//! The SASL PLAIN message (RFC 4616).
//!
//! | field   | bytes                         |
//! |---------|-------------------------------|
//! | authzid | UTF-8, may be empty           |
//! | NUL     | `0x00`                        |
//! | authcid | UTF-8, the username, non-empty |
//! | NUL     | `0x00`                        |
//! | passwd  | UTF-8, non-empty              |
//!
//! As in Kafka, the authzid must be empty or equal to the username: PLAIN
//! does not let one user act as another. The whole message is at most
//! [`MAX_MESSAGE_LEN`] bytes. PLAIN sends the password itself, so it belongs
//! on TLS connections only (the listener decides).

use crate::{validate_username, AuthError};

/// Longest accepted PLAIN message, in bytes.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Splits a PLAIN message into (username, password), checking the authzid.
pub fn parse_plain(msg: &[u8]) -> Result<(String, String), AuthError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(AuthError::TooLarge {
            len: msg.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    let text = std::str::from_utf8(msg).map_err(AuthError::NotUtf8)?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "PLAIN message must be authzid NUL username NUL password",
        ));
    };
    if user.is_empty() {
        return Err(AuthError::Malformed("PLAIN message has an empty username"));
    }
    if password.is_empty() {
        return Err(AuthError::Malformed("PLAIN message has an empty password"));
    }
    validate_username(user)?;
    if !authzid.is_empty() && authzid != user {
        return Err(AuthError::AuthorizationId);
    }
    Ok((user.to_string(), password.to_string()))
}

/// Builds a PLAIN message with an empty authzid: `\0username\0password`.
pub fn encode_plain(username: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(username.len() + password.len() + 2);
    out.push(0);
    out.extend_from_slice(username.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(msg: &[u8]) -> (String, String) {
        parse_plain(msg).unwrap()
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(ok(b"\0alice\0pw"), ("alice".into(), "pw".into()));
        assert_eq!(ok(b"alice\0alice\0pw"), ("alice".into(), "pw".into()));
        assert_eq!(
            ok("\0ünï\0pä ss".as_bytes()),
            ("ünï".into(), "pä ss".into())
        );
        assert_eq!(
            ok(&encode_plain("bob", "x=y,z")),
            ("bob".into(), "x=y,z".into())
        );
    }

    #[test]
    fn refused_forms() {
        let cases: &[&[u8]] = &[
            b"",
            b"\0",
            b"\0\0",
            b"\0alice\0",
            b"\0\0pw",
            b"alice\0pw",
            b"\0alice\0pw\0",
            b"\0alice\0pw\0more",
            b"bob\0alice\0pw",
            b"\0al\xffice\0pw",
            b"\0alice\0p\xc3",
            b"\0a\x01b\0pw",
        ];
        for c in cases {
            assert!(parse_plain(c).is_err(), "{:?}", c);
        }
        assert!(matches!(
            parse_plain(b"bob\0alice\0pw"),
            Err(AuthError::AuthorizationId)
        ));
        let big = encode_plain("alice", &"p".repeat(MAX_MESSAGE_LEN));
        assert!(matches!(parse_plain(&big), Err(AuthError::TooLarge { .. })));
    }
}
