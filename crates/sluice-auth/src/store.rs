//! The security metadata — users' SCRAM credentials, ACLs, quotas — and the
//! commands that change it.
//!
//! [`SecurityState::apply`] is a pure, deterministic function of the state
//! and a [`SecurityCommand`]: a cluster runs it in its Raft state machine
//! and every node ends with the same state; a single node runs it through
//! [`LocalSecurityStore`], which persists each change. Proposers should
//! call [`SecurityCommand::validate`] first and report its error: `apply`
//! never fails, it skips what is invalid.
//!
//! ## File format (`<dir>/security.json`)
//!
//! | bytes            | content                                                              |
//! |------------------|----------------------------------------------------------------------|
//! | header line      | `sluice-security v1 crc32=<8 lower-case hex> len=<decimal>` then `\n` |
//! | `len` bytes      | the body: [`SecurityState`] as (pretty) JSON, UTF-8                   |
//! | (nothing else)   | trailing bytes make the file corrupt                                  |
//!
//! `crc32` is CRC-32 (IEEE, `crc32fast`) of the body. A header longer than
//! [`MAX_HEADER_LEN`] bytes, a wrong magic or version, a length or checksum
//! mismatch, or a body that does not decode is refused with
//! [`AuthError::Corrupt`] / [`AuthError::Json`] — never read as an empty
//! state, which would silently drop every user and ACL. In the body, byte
//! strings (salts, keys) are base64 and quotas are a list of
//! `[entity, values]` pairs (JSON objects only have string keys).
//!
//! Each change is written to `security.json.tmp`, fsynced, renamed over
//! `security.json`, and the directory fsynced. A leftover `.tmp` (a crash
//! mid-write) is removed at open.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::acl::{AclBinding, AclFilter, Authorizer};
use crate::quota::{QuotaEntity, QuotaValues};
use crate::scram::{ScramCredential, ScramMechanism};
use crate::{validate_username, AuthError};

/// The store's file name inside its directory.
pub const FILE_NAME: &str = "security.json";
const TMP_NAME: &str = "security.json.tmp";
const MAGIC: &str = "sluice-security";
const VERSION: u32 = 1;
/// Longest header line accepted, newline included.
pub const MAX_HEADER_LEN: usize = 128;

/// Users, ACLs and quotas.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SecurityState {
    /// SCRAM credentials by user, then mechanism.
    pub users: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
    /// Every ACL binding.
    pub acls: BTreeSet<AclBinding>,
    /// Quota values by entity.
    #[serde(with = "pairs")]
    pub quotas: BTreeMap<QuotaEntity, QuotaValues>,
}

/// A change to the security state (one Raft log entry).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SecurityCommand {
    /// Adds or replaces the user's credential for its mechanism (creating the user).
    UpsertCredential {
        /// The user.
        user: String,
        /// The new credential.
        credential: ScramCredential,
    },
    /// Removes one mechanism's credential (and the user when it was the last).
    DeleteCredential {
        /// The user.
        user: String,
        /// Which credential.
        mechanism: ScramMechanism,
    },
    /// Removes a user and all its credentials (its ACLs stay, as in Kafka).
    DeleteUser {
        /// The user.
        user: String,
    },
    /// Adds bindings (already present ones are no-ops).
    CreateAcls {
        /// The bindings.
        bindings: Vec<AclBinding>,
    },
    /// Removes every binding matching each filter, in order.
    DeleteAcls {
        /// The filters.
        filters: Vec<AclFilter>,
    },
    /// Sets an entity's quotas; all-`None` values remove the entity.
    SetQuota {
        /// Who.
        entity: QuotaEntity,
        /// The rates.
        values: QuotaValues,
    },
}

impl SecurityCommand {
    /// Checks the command before it is proposed: valid usernames, credentials, bindings, entities and rates.
    pub fn validate(&self) -> Result<(), AuthError> {
        match self {
            SecurityCommand::UpsertCredential { user, credential } => {
                validate_username(user)?;
                credential.validate()
            }
            SecurityCommand::DeleteCredential { user, .. }
            | SecurityCommand::DeleteUser { user } => validate_username(user),
            SecurityCommand::CreateAcls { bindings } => {
                bindings.iter().try_for_each(AclBinding::validate)
            }
            SecurityCommand::DeleteAcls { .. } => Ok(()),
            SecurityCommand::SetQuota { entity, values } => {
                entity.validate()?;
                values.validate()
            }
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SecurityOutcome {
    /// Applied.
    Done,
    /// Per filter, the bindings it deleted.
    Deleted(Vec<Vec<AclBinding>>),
    /// The user, credential or quota entity to remove does not exist (or the command was invalid).
    NotFound,
}

impl SecurityState {
    /// Applies a command. Deterministic: the same command sequence gives the same state on every node (it runs inside a Raft state machine). Invalid parts are skipped.
    pub fn apply(&mut self, cmd: &SecurityCommand) -> SecurityOutcome {
        use SecurityOutcome::{Done, NotFound};
        match cmd {
            SecurityCommand::UpsertCredential { user, credential } => {
                if validate_username(user).is_err() || credential.validate().is_err() {
                    return NotFound;
                }
                self.users
                    .entry(user.clone())
                    .or_default()
                    .insert(credential.mechanism, credential.clone());
                Done
            }
            SecurityCommand::DeleteCredential { user, mechanism } => {
                let Some(creds) = self.users.get_mut(user) else {
                    return NotFound;
                };
                if creds.remove(mechanism).is_none() {
                    return NotFound;
                }
                if creds.is_empty() {
                    self.users.remove(user);
                }
                Done
            }
            SecurityCommand::DeleteUser { user } => match self.users.remove(user) {
                Some(_) => Done,
                None => NotFound,
            },
            SecurityCommand::CreateAcls { bindings } => {
                for b in bindings.iter().filter(|b| b.validate().is_ok()) {
                    self.acls.insert(b.clone());
                }
                Done
            }
            SecurityCommand::DeleteAcls { filters } => SecurityOutcome::Deleted(
                filters
                    .iter()
                    .map(|f| {
                        let hit: Vec<AclBinding> =
                            self.acls.iter().filter(|b| f.matches(b)).cloned().collect();
                        for b in &hit {
                            self.acls.remove(b);
                        }
                        hit
                    })
                    .collect(),
            ),
            SecurityCommand::SetQuota { entity, values } => {
                if entity.validate().is_err() || values.validate().is_err() {
                    return NotFound;
                }
                if values.is_empty() {
                    match self.quotas.remove(entity) {
                        Some(_) => Done,
                        None => NotFound,
                    }
                } else {
                    self.quotas.insert(entity.clone(), *values);
                    Done
                }
            }
        }
    }

    /// The user's credential for a mechanism, if any.
    pub fn credential(&self, user: &str, m: ScramMechanism) -> Option<ScramCredential> {
        self.users.get(user)?.get(&m).cloned()
    }

    /// An [`Authorizer`] over the current ACLs.
    pub fn authorizer(&self) -> Authorizer {
        Authorizer::new(self.acls.iter().cloned())
    }
}

/// The single-node store: the state in `<dir>/security.json`, rewritten atomically (temp file, fsync, rename, fsync dir) after each command; a CRC-32 of the JSON body in a header line so a torn or edited file is refused rather than silently emptied.
#[derive(Debug)]
pub struct LocalSecurityStore {
    dir: PathBuf,
    path: PathBuf,
    /// Set when a write failed after its rename: the file may hold a state
    /// memory does not, so further writes are refused until reopened.
    poisoned: bool,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AuthError + 'a {
    move |source| AuthError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl LocalSecurityStore {
    /// Opens (creating the directory if needed) and loads the state; no file means an empty state.
    pub fn open(dir: &Path) -> Result<(Self, SecurityState), AuthError> {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let tmp = dir.join(TMP_NAME);
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove stale temp file", &tmp)(e))
            }
            _ => {}
        }
        let path = dir.join(FILE_NAME);
        let state = match fs::read(&path) {
            Ok(bytes) => decode(&path, &bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => SecurityState::default(),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let store = LocalSecurityStore {
            dir: dir.to_path_buf(),
            path,
            poisoned: false,
        };
        Ok((store, state))
    }

    /// The file holding the state.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies a command to a clone of `state`, persists it, then swaps it in: a failed write leaves `state` unchanged.
    pub fn apply(
        &mut self,
        state: &mut SecurityState,
        cmd: &SecurityCommand,
    ) -> Result<SecurityOutcome, AuthError> {
        if self.poisoned {
            return Err(AuthError::Poisoned {
                path: self.path.clone(),
            });
        }
        let mut next = state.clone();
        let outcome = next.apply(cmd);
        if next != *state {
            self.persist(&next)?;
            *state = next;
        }
        Ok(outcome)
    }

    fn persist(&mut self, state: &SecurityState) -> Result<(), AuthError> {
        let bytes = encode(state).map_err(|source| AuthError::Json {
            path: self.path.clone(),
            source,
        })?;
        let tmp = self.dir.join(TMP_NAME);
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        };
        write().map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(io_err("rename into", &self.path))?;
        // From here the new file may be what a restart reads.
        let sync_dir = File::open(&self.dir).and_then(|d| d.sync_all());
        if let Err(e) = sync_dir {
            self.poisoned = true;
            return Err(io_err("fsync directory", &self.dir)(e));
        }
        Ok(())
    }
}

/// Header line plus JSON body.
fn encode(state: &SecurityState) -> Result<Vec<u8>, serde_json::Error> {
    let body = serde_json::to_vec_pretty(state)?;
    let mut out = format!(
        "{MAGIC} v{VERSION} crc32={:08x} len={}\n",
        crc32fast::hash(&body),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

fn decode(path: &Path, bytes: &[u8]) -> Result<SecurityState, AuthError> {
    let corrupt = |reason: String| AuthError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let nl = bytes
        .iter()
        .take(MAX_HEADER_LEN)
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let header =
        std::str::from_utf8(&bytes[..nl]).map_err(|_| corrupt("header is not text".into()))?;
    let body = &bytes[nl + 1..];
    let fields: Vec<&str> = header.split(' ').collect();
    let [magic, version, crc, len] = fields[..] else {
        return Err(corrupt("header does not have 4 fields".into()));
    };
    if magic != MAGIC {
        return Err(corrupt("not a sluice security file (bad magic)".into()));
    }
    if version != format!("v{VERSION}") {
        return Err(corrupt(format!("unsupported version {version:?}")));
    }
    let crc = crc
        .strip_prefix("crc32=")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| corrupt("bad crc32 field".into()))?;
    let len: usize = len
        .strip_prefix("len=")
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| corrupt("bad len field".into()))?;
    if body.len() != len {
        return Err(corrupt(format!(
            "body is {} bytes, header says {len} (torn write?)",
            body.len()
        )));
    }
    let actual = crc32fast::hash(body);
    if actual != crc {
        return Err(corrupt(format!(
            "checksum mismatch: header {crc:08x}, body {actual:08x}"
        )));
    }
    serde_json::from_slice(body).map_err(|source| AuthError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Serde for a map with non-string keys, as a list of `[key, value]` pairs.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{Operation, PatternType, Permission, ResourceType};
    use crate::quota::EntityName;

    fn cred(m: ScramMechanism, pw: &str) -> ScramCredential {
        ScramCredential::with_salt(m, pw, b"fixed salt", 4096).unwrap()
    }

    fn binding(name: &str, op: Operation) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            name: name.into(),
            pattern: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: op,
            permission: Permission::Allow,
        }
    }

    fn entity(user: &str) -> QuotaEntity {
        QuotaEntity {
            user: Some(EntityName::Named(user.into())),
            client_id: Some(EntityName::Default),
        }
    }

    fn rate(r: f64) -> QuotaValues {
        QuotaValues {
            request_rate: Some(r),
            ..Default::default()
        }
    }

    /// A command of every kind, leaving a non-trivial state.
    fn script() -> Vec<SecurityCommand> {
        use SecurityCommand::*;
        vec![
            UpsertCredential {
                user: "alice".into(),
                credential: cred(ScramMechanism::Sha256, "a"),
            },
            UpsertCredential {
                user: "alice".into(),
                credential: cred(ScramMechanism::Sha512, "a"),
            },
            UpsertCredential {
                user: "bob".into(),
                credential: cred(ScramMechanism::Sha256, "b"),
            },
            CreateAcls {
                bindings: vec![
                    binding("t1", Operation::Read),
                    binding("t2", Operation::Write),
                    binding("t3", Operation::Read),
                ],
            },
            SetQuota {
                entity: entity("alice"),
                values: rate(10.0),
            },
            SetQuota {
                entity: entity("bob"),
                values: rate(5.0),
            },
        ]
    }

    fn built() -> SecurityState {
        let mut s = SecurityState::default();
        for c in script() {
            assert!(c.validate().is_ok());
            assert_eq!(s.apply(&c), SecurityOutcome::Done);
        }
        s
    }

    #[test]
    fn apply_each_command() {
        use SecurityCommand::*;
        let mut s = built();
        assert_eq!(s.users.len(), 2);
        assert_eq!(
            s.credential("alice", ScramMechanism::Sha512),
            Some(cred(ScramMechanism::Sha512, "a"))
        );
        assert_eq!(s.acls.len(), 3);
        assert_eq!(s.quotas.len(), 2);

        let del = |m| DeleteCredential {
            user: "alice".into(),
            mechanism: m,
        };
        assert_eq!(s.apply(&del(ScramMechanism::Sha512)), SecurityOutcome::Done);
        assert_eq!(
            s.apply(&del(ScramMechanism::Sha512)),
            SecurityOutcome::NotFound
        );
        assert_eq!(s.apply(&del(ScramMechanism::Sha256)), SecurityOutcome::Done);
        assert!(!s.users.contains_key("alice"));
        assert_eq!(
            s.apply(&DeleteUser { user: "bob".into() }),
            SecurityOutcome::Done
        );
        assert_eq!(
            s.apply(&DeleteUser { user: "bob".into() }),
            SecurityOutcome::NotFound
        );

        let filters = vec![
            AclFilter {
                operation: Some(Operation::Read),
                ..Default::default()
            },
            AclFilter::default(),
            AclFilter::default(),
        ];
        assert_eq!(
            s.apply(&DeleteAcls { filters }),
            SecurityOutcome::Deleted(vec![
                vec![
                    binding("t1", Operation::Read),
                    binding("t3", Operation::Read)
                ],
                vec![binding("t2", Operation::Write)],
                vec![],
            ])
        );
        assert!(s.acls.is_empty());

        let unset = SetQuota {
            entity: entity("bob"),
            values: QuotaValues::default(),
        };
        assert_eq!(s.apply(&unset), SecurityOutcome::Done);
        assert_eq!(s.apply(&unset), SecurityOutcome::NotFound);
        assert_eq!(s.quotas.len(), 1);

        // Invalid commands are refused by validate and skipped by apply.
        let before = s.clone();
        let bad = [
            UpsertCredential {
                user: String::new(),
                credential: cred(ScramMechanism::Sha256, "x"),
            },
            CreateAcls {
                bindings: vec![AclBinding {
                    host: "nope".into(),
                    ..binding("t", Operation::Read)
                }],
            },
            SetQuota {
                entity: QuotaEntity::default(),
                values: rate(1.0),
            },
            SetQuota {
                entity: entity("x"),
                values: rate(-1.0),
            },
        ];
        for c in &bad {
            assert!(c.validate().is_err(), "{c:?}");
            s.apply(c);
        }
        assert_eq!(s, before);
    }

    #[test]
    fn apply_is_deterministic() {
        assert_eq!(built(), built());
        assert_eq!(
            serde_json::to_vec(&built()).unwrap(),
            serde_json::to_vec(&built()).unwrap()
        );
    }

    #[test]
    fn commands_round_trip_through_json() {
        let mut cmds = script();
        cmds.push(SecurityCommand::DeleteAcls {
            filters: vec![AclFilter {
                name: Some("t".into()),
                pattern: Some(PatternType::Match),
                ..Default::default()
            }],
        });
        for c in cmds {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<SecurityCommand>(&json).unwrap(), c);
        }
    }

    #[test]
    fn persist_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut state) = LocalSecurityStore::open(dir.path()).unwrap();
        assert_eq!(state, SecurityState::default());
        for c in script() {
            store.apply(&mut state, &c).unwrap();
        }
        assert_eq!(state, built());
        drop(store);
        let (_, reopened) = LocalSecurityStore::open(dir.path()).unwrap();
        assert_eq!(reopened, state);
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.starts_with("sluice-security v1 crc32="), "{text}");
        // A stale temp file from a crash is ignored and removed.
        fs::write(dir.path().join(TMP_NAME), b"half a write").unwrap();
        let (_, again) = LocalSecurityStore::open(dir.path()).unwrap();
        assert_eq!(again, state);
        assert!(!dir.path().join(TMP_NAME).exists());
    }

    #[test]
    fn corrupted_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut state) = LocalSecurityStore::open(dir.path()).unwrap();
        for c in script() {
            store.apply(&mut state, &c).unwrap();
        }
        let path = dir.path().join(FILE_NAME);
        let good = fs::read(&path).unwrap();
        let nl = good.iter().position(|&b| b == b'\n').unwrap();
        let mut flipped = good.clone();
        flipped[nl + 20] ^= 0x01;
        let mut header_flip = good.clone();
        header_flip[3] ^= 0x20;
        let mut appended = good.clone();
        appended.extend_from_slice(b"\n{}");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("truncated", good[..good.len() - 10].to_vec()),
            ("header only", good[..=nl].to_vec()),
            ("flipped body byte", flipped),
            ("flipped header byte", header_flip),
            ("appended", appended),
            ("plain json", serde_json::to_vec(&state).unwrap()),
            ("long garbage", vec![b'x'; 10_000]),
            (
                "other version",
                String::from_utf8(good.clone())
                    .unwrap()
                    .replacen(" v1 ", " v2 ", 1)
                    .into_bytes(),
            ),
        ];
        for (what, bytes) in cases {
            fs::write(&path, &bytes).unwrap();
            let err = LocalSecurityStore::open(dir.path()).unwrap_err();
            assert!(matches!(err, AuthError::Corrupt { .. }), "{what}: {err}");
        }
        // A body with a valid checksum that is not our JSON.
        let body = b"{\"users\": 5}";
        let mut bytes = format!(
            "sluice-security v1 crc32={:08x} len={}\n",
            crc32fast::hash(body),
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        fs::write(&path, bytes).unwrap();
        assert!(matches!(
            LocalSecurityStore::open(dir.path()),
            Err(AuthError::Json { .. })
        ));
    }

    #[test]
    fn failed_write_leaves_state_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sec");
        let (mut store, mut state) = LocalSecurityStore::open(&sub).unwrap();
        store.apply(&mut state, &script()[0]).unwrap();
        let before = state.clone();
        // Replace the directory by a plain file: every write now fails, even as root.
        fs::remove_dir_all(&sub).unwrap();
        fs::write(&sub, b"not a directory").unwrap();
        let err = store.apply(&mut state, &script()[2]).unwrap_err();
        assert!(matches!(err, AuthError::Io { .. }), "{err}");
        assert_eq!(state, before);
        // A no-op command does not touch the disk, so it still succeeds.
        let noop = SecurityCommand::DeleteUser {
            user: "nobody".into(),
        };
        assert_eq!(
            store.apply(&mut state, &noop).unwrap(),
            SecurityOutcome::NotFound
        );
        // Opening on a file fails clearly.
        assert!(matches!(
            LocalSecurityStore::open(&sub),
            Err(AuthError::Io { .. })
        ));
    }
}
