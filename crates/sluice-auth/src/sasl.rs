//! One server-side SASL authentication session, mechanism chosen by name.
//!
//! Both protocols drive it the same way: the client names a mechanism
//! (Kafka's SaslHandshake, or the native handshake), the front end makes a
//! [`SaslSession`] for it and feeds it each client message until it returns
//! [`SaslStep::Done`] with the principal, or an error (which ends the
//! session: every later step is refused).
//!
//! | mechanism        | client messages               | server replies                 |
//! |------------------|-------------------------------|--------------------------------|
//! | `PLAIN`          | `authzid\0user\0password`      | (empty)                        |
//! | `SCRAM-SHA-256`  | client-first, client-final    | server-first, server-final     |
//! | `SCRAM-SHA-512`  | client-first, client-final    | server-first, server-final     |
//!
//! Only salted SCRAM credentials are stored, so PLAIN checks the password by
//! deriving the user's SCRAM credential (SHA-256 if present, else SHA-512).

use crate::plain::parse_plain;
use crate::scram::{fake_credential, ScramCredential, ScramMechanism, ScramServer};
use crate::AuthError;

/// The principal type of SASL-authenticated users (`User:<name>`).
pub const USER_PRINCIPAL_TYPE: &str = "User";

/// Mechanism names offered to clients, preferred first.
pub const MECHANISMS: &[&str] = &["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"];

/// The principal string for a user name: `User:<name>`.
pub fn user_principal(name: &str) -> String {
    format!("{USER_PRINCIPAL_TYPE}:{name}")
}

/// A SASL mechanism the server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// PLAIN (RFC 4616).
    Plain,
    /// SCRAM with the given hash.
    Scram(ScramMechanism),
}

impl Mechanism {
    /// The mechanism for a SASL name (exact, as listed in [`MECHANISMS`]).
    pub fn from_name(s: &str) -> Option<Self> {
        if s == "PLAIN" {
            Some(Mechanism::Plain)
        } else {
            ScramMechanism::from_name(s).map(Mechanism::Scram)
        }
    }

    /// The SASL name, e.g. `PLAIN` or `SCRAM-SHA-512`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
        }
    }
}

/// What to do after a step of a [`SaslSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslStep {
    /// Send this and expect another message.
    Continue(Vec<u8>),
    /// authenticated as `principal` (`User:<name>`); send `reply` (may be empty)
    Done {
        /// The authenticated principal, `User:<name>`.
        principal: String,
        /// The last server message (SCRAM's server-final; empty for PLAIN).
        reply: Vec<u8>,
    },
}

#[derive(Debug)]
enum State {
    Plain,
    Scram(ScramServer),
    Over,
}

/// One server-side authentication exchange.
#[derive(Debug)]
pub struct SaslSession {
    mechanism: Mechanism,
    state: State,
}

impl SaslSession {
    /// A session for `mechanism`, awaiting the client's first message.
    pub fn new(mechanism: Mechanism) -> Self {
        let state = match mechanism {
            Mechanism::Plain => State::Plain,
            Mechanism::Scram(m) => State::Scram(ScramServer::new(m)),
        };
        SaslSession { mechanism, state }
    }

    /// The mechanism this session runs.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Feeds one client message. `lookup(user, mech)` finds a stored credential; PLAIN verifies the password against any stored SCRAM credential of the user (SHA-256 preferred).
    pub fn step(
        &mut self,
        input: &[u8],
        lookup: &dyn Fn(&str, ScramMechanism) -> Option<ScramCredential>,
    ) -> Result<SaslStep, AuthError> {
        match std::mem::replace(&mut self.state, State::Over) {
            State::Over => Err(AuthError::OutOfOrder("the SASL exchange is over")),
            State::Plain => {
                let (user, password) = parse_plain(input)?;
                let stored = lookup(&user, ScramMechanism::Sha256)
                    .or_else(|| lookup(&user, ScramMechanism::Sha512));
                let ok = match stored {
                    Some(c) => c.verify_password(&password),
                    None => {
                        // Spend the same PBKDF2 time as for a real user.
                        if let Ok(fake) = fake_credential(ScramMechanism::Sha256, &user) {
                            std::hint::black_box(fake.verify_password(&password));
                        }
                        false
                    }
                };
                if !ok {
                    return Err(AuthError::AuthenticationFailed);
                }
                Ok(SaslStep::Done {
                    principal: user_principal(&user),
                    reply: Vec::new(),
                })
            }
            State::Scram(mut server) => {
                if server.awaiting_first() {
                    let m = server.mechanism();
                    let reply = server.first(input, |u| lookup(u, m))?;
                    self.state = State::Scram(server);
                    Ok(SaslStep::Continue(reply))
                } else {
                    let (user, reply) = server.finish(input)?;
                    Ok(SaslStep::Done {
                        principal: user_principal(&user),
                        reply,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plain::encode_plain;
    use crate::scram::ScramClient;
    use std::collections::HashMap;

    fn users() -> HashMap<(String, ScramMechanism), ScramCredential> {
        let mut m = HashMap::new();
        let c = |mech, pw| ScramCredential::new(mech, pw, 4096).unwrap();
        m.insert(
            ("alice".into(), ScramMechanism::Sha256),
            c(ScramMechanism::Sha256, "a-pw"),
        );
        m.insert(
            ("bob".into(), ScramMechanism::Sha512),
            c(ScramMechanism::Sha512, "b-pw"),
        );
        m
    }

    fn lookup_in(
        u: &HashMap<(String, ScramMechanism), ScramCredential>,
    ) -> impl Fn(&str, ScramMechanism) -> Option<ScramCredential> + '_ {
        move |name, m| u.get(&(name.to_string(), m)).cloned()
    }

    #[test]
    fn names() {
        for n in MECHANISMS {
            assert_eq!(Mechanism::from_name(n).unwrap().name(), *n);
        }
        assert_eq!(Mechanism::from_name("GSSAPI"), None);
        assert_eq!(user_principal("x"), "User:x");
    }

    #[test]
    fn plain_against_scram_credentials() {
        let u = users();
        let lookup = lookup_in(&u);
        let run = |user: &str, pw: &str| {
            SaslSession::new(Mechanism::Plain).step(&encode_plain(user, pw), &lookup)
        };
        assert_eq!(
            run("alice", "a-pw").unwrap(),
            SaslStep::Done {
                principal: "User:alice".into(),
                reply: vec![]
            }
        );
        // Only a SHA-512 credential: still usable by PLAIN.
        assert!(matches!(run("bob", "b-pw"), Ok(SaslStep::Done { .. })));
        assert!(matches!(
            run("alice", "b-pw"),
            Err(AuthError::AuthenticationFailed)
        ));
        assert!(matches!(
            run("carol", "x"),
            Err(AuthError::AuthenticationFailed)
        ));
        let mut s = SaslSession::new(Mechanism::Plain);
        s.step(&encode_plain("alice", "a-pw"), &lookup).unwrap();
        assert!(matches!(
            s.step(&encode_plain("alice", "a-pw"), &lookup),
            Err(AuthError::OutOfOrder(_))
        ));
    }

    #[test]
    fn scram_session() {
        let u = users();
        let lookup = lookup_in(&u);
        for (user, pw, m, good) in [
            ("alice", "a-pw", ScramMechanism::Sha256, true),
            ("bob", "b-pw", ScramMechanism::Sha512, true),
            ("bob", "b-pw", ScramMechanism::Sha256, false),
            ("alice", "nope", ScramMechanism::Sha256, false),
        ] {
            let mut client = ScramClient::new(m, user, pw);
            let mut s = SaslSession::new(Mechanism::Scram(m));
            let SaslStep::Continue(sf) = s.step(&client.first(), &lookup).unwrap() else {
                panic!("expected Continue");
            };
            let cfin = client.finish(&sf).unwrap();
            match s.step(&cfin, &lookup) {
                Ok(SaslStep::Done { principal, reply }) => {
                    assert!(good);
                    assert_eq!(principal, format!("User:{user}"));
                    client.verify(&reply).unwrap();
                }
                Err(AuthError::AuthenticationFailed) => assert!(!good),
                other => panic!("{other:?}"),
            }
            assert!(matches!(
                s.step(b"", &lookup),
                Err(AuthError::OutOfOrder(_))
            ));
        }
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn sessions_never_panic(msgs in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..120), 0..4)) {
                let u = users_once();
                let lookup = lookup_in(u);
                for name in MECHANISMS {
                    let mut s = SaslSession::new(Mechanism::from_name(name).unwrap());
                    for m in &msgs {
                        let _ = s.step(m, &lookup);
                    }
                }
            }
        }

        fn users_once() -> &'static HashMap<(String, ScramMechanism), ScramCredential> {
            static U: std::sync::OnceLock<HashMap<(String, ScramMechanism), ScramCredential>> =
                std::sync::OnceLock::new();
            U.get_or_init(users)
        }
    }
}
