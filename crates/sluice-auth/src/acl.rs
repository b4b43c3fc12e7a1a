//! Kafka's ACL model: bindings, filters, and the [`Authorizer`].
//!
//! An [`AclBinding`] says "`principal` from `host` is ALLOWed (or DENYed)
//! `operation` on resources of `resource_type` whose name matches `name`
//! (literally, or as a prefix)". The enums carry Kafka's wire codes (`i8`,
//! 0 = UNKNOWN is never produced) and lower-case names for the CLI; parsing
//! names ignores case, `-` and `_`, so `DescribeConfigs`,
//! `describe_configs` and `describe-configs` are the same.
//!
//! | enum           | codes                                                                                   |
//! |----------------|-----------------------------------------------------------------------------------------|
//! | `ResourceType` | 1 any, 2 topic, 3 group, 4 cluster, 5 transactional-id                                  |
//! | `PatternType`  | 1 any, 2 match, 3 literal, 4 prefixed                                                   |
//! | `Operation`    | 1 any, 2 all, 3 read, 4 write, 5 create, 6 delete, 7 alter, 8 describe, 9 cluster-action, 10 describe-configs, 11 alter-configs, 12 idempotent-write |
//! | `Permission`   | 1 any, 2 deny, 3 allow                                                                  |
//!
//! The cluster resource is named [`CLUSTER_RESOURCE_NAME`], as in Kafka.
//! Super users and "authorization off" are the caller's business.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::AuthError;

/// The name of the (single) cluster resource, as Kafka names it.
pub const CLUSTER_RESOURCE_NAME: &str = "kafka-cluster";
/// The wildcard: a literal resource name, principal name or host matching everything.
pub const WILDCARD: &str = "*";
/// Longest accepted resource name or principal, in bytes.
pub const MAX_NAME_LEN: usize = 4096;

fn normalize(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

macro_rules! kafka_enum {
    ($(#[$m:meta])* $name:ident, $kind:literal { $($(#[$vm:meta])* $var:ident = $code:literal, $text:literal;)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum $name { $($(#[$vm])* $var,)+ }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// Kafka's wire code.
            pub fn to_i8(self) -> i8 {
                match self { $($name::$var => $code,)+ }
            }

            /// The value for a Kafka wire code (`None` for 0 = UNKNOWN and codes we do not know).
            pub fn from_i8(code: i8) -> Option<Self> {
                match code { $($code => Some($name::$var),)+ _ => None }
            }

            /// The lower-case name the CLI shows and accepts.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $text,)+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = AuthError;
            fn from_str(s: &str) -> Result<Self, AuthError> {
                let key = normalize(s);
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| normalize(v.as_str()) == key)
                    .ok_or_else(|| AuthError::UnknownName { kind: $kind, name: s.to_string() })
            }
        }
    };
}

kafka_enum! {
    /// The kind of resource an ACL protects.
    ResourceType, "resource type" {
        /// Filters only: any type.
        Any = 1, "any";
        /// A topic.
        Topic = 2, "topic";
        /// A consumer group.
        Group = 3, "group";
        /// The cluster itself (named [`CLUSTER_RESOURCE_NAME`]).
        Cluster = 4, "cluster";
        /// A transactional id.
        TransactionalId = 5, "transactional-id";
    }
}

kafka_enum! {
    /// How a binding's resource name is matched.
    PatternType, "pattern type" {
        /// Filters only: any pattern type, name compared literally.
        Any = 1, "any";
        /// Filters only: every binding that would apply to the named resource.
        Match = 2, "match";
        /// The name equals the resource name (or is `*`).
        Literal = 3, "literal";
        /// The name is a prefix of the resource name.
        Prefixed = 4, "prefixed";
    }
}

kafka_enum! {
    /// An operation on a resource.
    Operation, "operation" {
        /// Filters only: any operation.
        Any = 1, "any";
        /// Every operation.
        All = 2, "all";
        /// Read (fetch, commit offsets, join a group).
        Read = 3, "read";
        /// Write (produce).
        Write = 4, "write";
        /// Create topics.
        Create = 5, "create";
        /// Delete topics, records or groups.
        Delete = 6, "delete";
        /// Alter (partitions, ACLs, users).
        Alter = 7, "alter";
        /// Describe (metadata, offsets, groups).
        Describe = 8, "describe";
        /// Broker-to-broker actions.
        ClusterAction = 9, "cluster-action";
        /// Read configuration.
        DescribeConfigs = 10, "describe-configs";
        /// Change configuration.
        AlterConfigs = 11, "alter-configs";
        /// Idempotent produce.
        IdempotentWrite = 12, "idempotent-write";
    }
}

kafka_enum! {
    /// Whether a binding grants or refuses.
    Permission, "permission" {
        /// Filters only: either.
        Any = 1, "any";
        /// Refuses; wins over any ALLOW.
        Deny = 2, "deny";
        /// Grants.
        Allow = 3, "allow";
    }
}

/// One ACL: who may (or may not) do what to which resources, from where.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct AclBinding {
    /// The kind of resource (never `Any`).
    pub resource_type: ResourceType,
    /// The resource name, a prefix for `Prefixed`, or `*` (literal) for all.
    pub name: String,
    /// `Literal` or `Prefixed`.
    pub pattern: PatternType,
    /// `Type:name`, e.g. `User:alice`, or `User:*` for every user.
    pub principal: String,
    /// `*` or a client IP address.
    pub host: String,
    /// The operation (never `Any`; `All` covers every operation).
    pub operation: Operation,
    /// `Allow` or `Deny`.
    pub permission: Permission,
}

impl AclBinding {
    /// Checks the binding is storable: concrete enums, `Literal`/`Prefixed`, principal `Type:name`, host `*` or an IP.
    pub fn validate(&self) -> Result<(), AuthError> {
        let bad = |why| Err(AuthError::InvalidAcl(why));
        if self.resource_type == ResourceType::Any {
            return bad("resource type must not be 'any'");
        }
        if !matches!(self.pattern, PatternType::Literal | PatternType::Prefixed) {
            return bad("pattern type must be literal or prefixed");
        }
        if self.operation == Operation::Any {
            return bad("operation must not be 'any'");
        }
        if !matches!(self.permission, Permission::Allow | Permission::Deny) {
            return bad("permission must be allow or deny");
        }
        if self.name.is_empty() || self.name.len() > MAX_NAME_LEN {
            return bad("resource name must be 1 to 4096 bytes");
        }
        match self.principal.split_once(':') {
            Some((t, n)) if !t.is_empty() && !n.is_empty() => {}
            _ => return bad("principal must be Type:name, e.g. User:alice"),
        }
        if self.principal.len() > MAX_NAME_LEN {
            return bad("principal longer than 4096 bytes");
        }
        if self.host != WILDCARD && self.host.parse::<IpAddr>().is_err() {
            return bad("host must be * or an IP address");
        }
        Ok(())
    }
}

/// Kafka's AclBindingFilter (for describe and delete): None fields match anything; Any enums match anything; PatternType::Match matches literal equal name, literal "*" and prefixed patterns that are prefixes of the name.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AclFilter {
    /// Resource type to match (`None`/`Any`: all).
    pub resource_type: Option<ResourceType>,
    /// Resource name to match (`None`: all).
    pub name: Option<String>,
    /// Pattern type to match (`None`/`Any`: all, name compared literally; `Match`: see above).
    pub pattern: Option<PatternType>,
    /// Principal to match exactly (`None`: all).
    pub principal: Option<String>,
    /// Host to match exactly (`None`: all).
    pub host: Option<String>,
    /// Operation to match exactly (`None`/`Any`: all).
    pub operation: Option<Operation>,
    /// Permission to match (`None`/`Any`: all).
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// The filter matching exactly this binding (what `acl remove` with every field given sends).
    pub fn exact(b: &AclBinding) -> Self {
        AclFilter {
            resource_type: Some(b.resource_type),
            name: Some(b.name.clone()),
            pattern: Some(b.pattern),
            principal: Some(b.principal.clone()),
            host: Some(b.host.clone()),
            operation: Some(b.operation),
            permission: Some(b.permission),
        }
    }

    /// True when the binding passes every field of the filter.
    pub fn matches(&self, b: &AclBinding) -> bool {
        fn any_or<T: PartialEq + Copy>(f: Option<T>, any: T, v: T) -> bool {
            f.is_none_or(|f| f == any || f == v)
        }
        if !any_or(self.resource_type, ResourceType::Any, b.resource_type)
            || !any_or(self.operation, Operation::Any, b.operation)
            || !any_or(self.permission, Permission::Any, b.permission)
            || self.principal.as_ref().is_some_and(|p| *p != b.principal)
            || self.host.as_ref().is_some_and(|h| *h != b.host)
        {
            return false;
        }
        let pattern = self.pattern.unwrap_or(PatternType::Any);
        if !matches!(pattern, PatternType::Any | PatternType::Match) && pattern != b.pattern {
            return false;
        }
        let Some(name) = &self.name else {
            return true;
        };
        if pattern != PatternType::Match {
            return *name == b.name;
        }
        match b.pattern {
            PatternType::Literal => *name == b.name || b.name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&b.name),
            PatternType::Any | PatternType::Match => false,
        }
    }
}

/// Who a binding applies to, pre-parsed.
#[derive(Debug)]
enum PrincipalMatch {
    Exact(String),
    /// `Type:*`, kept as `Type:`.
    AnyOfType(String),
}

/// A binding's rule without its resource, as stored in the index.
#[derive(Debug)]
struct Entry {
    principal: PrincipalMatch,
    /// `None` for `*`.
    host: Option<IpAddr>,
    operation: Operation,
    permission: Permission,
}

impl Entry {
    fn new(b: &AclBinding) -> Self {
        let principal = match b.principal.strip_suffix(WILDCARD) {
            Some(t) if t.ends_with(':') && t.len() > 1 => PrincipalMatch::AnyOfType(t.to_string()),
            _ => PrincipalMatch::Exact(b.principal.clone()),
        };
        Entry {
            principal,
            host: b.host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical()),
            operation: b.operation,
            permission: b.permission,
        }
    }

    fn applies_to(&self, principal: &str, host: IpAddr) -> bool {
        let who = match &self.principal {
            PrincipalMatch::Exact(p) => p == principal,
            PrincipalMatch::AnyOfType(t) => principal.starts_with(t.as_str()),
        };
        who && self.host.is_none_or(|h| h == host)
    }

    fn denies(&self, op: Operation) -> bool {
        self.permission == Permission::Deny
            && (self.operation == op || self.operation == Operation::All)
    }

    fn allows(&self, ops: &[Operation]) -> bool {
        self.permission == Permission::Allow
            && (self.operation == Operation::All || ops.contains(&self.operation))
    }
}

/// The operations whose ALLOW grants `op` (Kafka's implied operations).
fn allowing_ops(op: Operation) -> &'static [Operation] {
    use Operation::*;
    match op {
        Describe => &[Describe, Read, Write, Delete, Alter],
        DescribeConfigs => &[DescribeConfigs, AlterConfigs],
        Any => &[],
        All => &[All],
        Read => &[Read],
        Write => &[Write],
        Create => &[Create],
        Delete => &[Delete],
        Alter => &[Alter],
        ClusterAction => &[ClusterAction],
        AlterConfigs => &[AlterConfigs],
        IdempotentWrite => &[IdempotentWrite],
    }
}

/// The bindings of one resource type, indexed by name.
#[derive(Debug, Default)]
struct TypeIndex {
    /// Literal names, `*` included.
    literal: HashMap<String, Vec<Entry>>,
    /// Prefixed names.
    prefixed: HashMap<String, Vec<Entry>>,
    /// The distinct lengths of the prefixes, ascending: a lookup probes
    /// `prefixed` once per length instead of scanning every prefix.
    prefix_lens: Vec<usize>,
}

impl TypeIndex {
    /// The entries whose pattern covers `name`: literal `name` (if `with_literal`),
    /// literal `*`, and every prefixed pattern that is a prefix of `name`.
    fn covering<'a>(
        &'a self,
        name: &'a str,
        with_literal: bool,
    ) -> impl Iterator<Item = &'a Entry> {
        let literal = with_literal
            .then(|| self.literal.get(name))
            .flatten()
            .into_iter()
            .flatten();
        let wildcard = (name != WILDCARD || !with_literal)
            .then(|| self.literal.get(WILDCARD))
            .flatten()
            .into_iter()
            .flatten();
        let prefixed = self
            .prefix_lens
            .iter()
            .take_while(move |&&l| l <= name.len())
            .filter_map(move |&l| name.get(..l))
            .filter_map(|p| self.prefixed.get(p))
            .flatten();
        literal.chain(wildcard).chain(prefixed)
    }
}

/// An immutable index of bindings answering authorization questions.
///
/// Built once per ACL change; `authorize` costs a few hash lookups (one for
/// the literal name, one for `*`, one per distinct prefix length) plus the
/// entries found, however many bindings there are.
#[derive(Debug, Default)]
pub struct Authorizer {
    bindings: Vec<AclBinding>,
    index: HashMap<ResourceType, TypeIndex>,
}

impl Authorizer {
    /// Indexes the bindings; invalid ones are kept in [`bindings`](Self::bindings) but never match.
    pub fn new(bindings: impl IntoIterator<Item = AclBinding>) -> Self {
        let bindings: Vec<AclBinding> = bindings.into_iter().collect();
        let mut index: HashMap<ResourceType, TypeIndex> = HashMap::new();
        for b in bindings.iter().filter(|b| b.validate().is_ok()) {
            let idx = index.entry(b.resource_type).or_default();
            let map = match b.pattern {
                PatternType::Prefixed => &mut idx.prefixed,
                _ => &mut idx.literal,
            };
            map.entry(b.name.clone()).or_default().push(Entry::new(b));
        }
        for idx in index.values_mut() {
            idx.prefix_lens = idx.prefixed.keys().map(String::len).collect();
            idx.prefix_lens.sort_unstable();
            idx.prefix_lens.dedup();
        }
        Authorizer { bindings, index }
    }

    /// Kafka's semantics: a binding applies when its resource type matches, its name matches (literal equal, literal "*", or prefixed prefix), principal equal or "User:*", host equal or "*", operation equal or All; DENY wins over ALLOW; Describe is implied by an ALLOW of Read, Write, Delete or Alter; DescribeConfigs is implied by AlterConfigs; no matching ALLOW = refused. (Super users are the caller's business.)
    pub fn authorize(
        &self,
        principal: &str,
        host: IpAddr,
        op: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool {
        if matches!(op, Operation::Any | Operation::All) || resource == ResourceType::Any {
            return false;
        }
        let Some(idx) = self.index.get(&resource) else {
            return false;
        };
        let host = host.to_canonical();
        let ops = allowing_ops(op);
        let mut allowed = false;
        for e in idx.covering(name, true) {
            if !e.applies_to(principal, host) {
                continue;
            }
            if e.denies(op) {
                return false;
            }
            allowed = allowed || e.allows(ops);
        }
        allowed
    }

    /// True when `principal` has some ALLOW (not denied) for `op` on any resource of this type, e.g. a topic-less describe — keep it simple and documented.
    ///
    /// Precisely: some applicable ALLOW binding (operations implied as in
    /// [`authorize`](Self::authorize)) whose pattern is not covered by an
    /// applicable DENY — a DENY covers a literal name when it is that literal,
    /// literal `*`, or a prefix of it, and covers a prefix when it is literal
    /// `*` or a shorter-or-equal prefix of it. Linear in the bindings of the
    /// type: meant for occasional requests, not the per-record path.
    pub fn authorize_any(
        &self,
        principal: &str,
        host: IpAddr,
        op: Operation,
        resource: ResourceType,
    ) -> bool {
        if matches!(op, Operation::Any | Operation::All) || resource == ResourceType::Any {
            return false;
        }
        let Some(idx) = self.index.get(&resource) else {
            return false;
        };
        let host = host.to_canonical();
        let ops = allowing_ops(op);
        let denied = |name: &str, literal: bool| {
            idx.covering(name, literal)
                .any(|e| e.applies_to(principal, host) && e.denies(op))
        };
        let allows = |entries: &Vec<Entry>| {
            entries
                .iter()
                .any(|e| e.applies_to(principal, host) && e.allows(ops))
        };
        idx.literal
            .iter()
            .any(|(name, es)| allows(es) && !denied(name, true))
            || idx
                .prefixed
                .iter()
                .any(|(name, es)| allows(es) && !denied(name, false))
    }

    /// Every binding, in the order given.
    pub fn bindings(&self) -> &[AclBinding] {
        &self.bindings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));

    fn b(
        rt: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        host: &str,
        op: Operation,
        perm: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            name: name.into(),
            pattern,
            principal: principal.into(),
            host: host.into(),
            operation: op,
            permission: perm,
        }
    }

    fn topic_allow(name: &str, pattern: PatternType, who: &str, op: Operation) -> AclBinding {
        b(
            ResourceType::Topic,
            name,
            pattern,
            who,
            "*",
            op,
            Permission::Allow,
        )
    }

    use Operation::*;
    use PatternType::{Literal, Prefixed};
    use ResourceType::{Group, Topic};

    #[test]
    fn allow_and_default_deny() {
        let a = Authorizer::new([topic_allow("orders", Literal, "User:alice", Read)]);
        assert!(a.authorize("User:alice", LOCAL, Read, Topic, "orders"));
        assert!(!a.authorize("User:alice", LOCAL, Write, Topic, "orders"));
        assert!(!a.authorize("User:bob", LOCAL, Read, Topic, "orders"));
        assert!(!a.authorize("User:alice", LOCAL, Read, Topic, "orders2"));
        assert!(!a.authorize("User:alice", LOCAL, Read, Group, "orders"));
        assert!(!a.authorize("User:alice", LOCAL, Any, Topic, "orders"));
        assert!(!Authorizer::new([]).authorize("User:alice", LOCAL, Read, Topic, "x"));
    }

    #[test]
    fn deny_wins() {
        let a = Authorizer::new([
            topic_allow("*", Literal, "User:*", All),
            b(
                Topic,
                "secret-",
                Prefixed,
                "User:bob",
                "*",
                Read,
                Permission::Deny,
            ),
            b(
                Topic,
                "audit",
                Literal,
                "User:*",
                "*",
                All,
                Permission::Deny,
            ),
        ]);
        assert!(a.authorize("User:bob", LOCAL, Read, Topic, "public"));
        assert!(!a.authorize("User:bob", LOCAL, Read, Topic, "secret-plans"));
        assert!(a.authorize("User:bob", LOCAL, Write, Topic, "secret-plans"));
        // A DENY of Read does not deny the Describe it would imply.
        assert!(a.authorize("User:bob", LOCAL, Describe, Topic, "secret-plans"));
        assert!(a.authorize("User:alice", LOCAL, Read, Topic, "secret-plans"));
        assert!(!a.authorize("User:alice", LOCAL, Describe, Topic, "audit"));
    }

    #[test]
    fn literal_vs_prefixed() {
        let a = Authorizer::new([
            topic_allow("app-", Prefixed, "User:a", Write),
            topic_allow("app-", Literal, "User:b", Write),
            topic_allow("ü", Prefixed, "User:c", Write),
        ]);
        assert!(a.authorize("User:a", LOCAL, Write, Topic, "app-1"));
        assert!(a.authorize("User:a", LOCAL, Write, Topic, "app-"));
        assert!(!a.authorize("User:a", LOCAL, Write, Topic, "app"));
        assert!(!a.authorize("User:b", LOCAL, Write, Topic, "app-1"));
        assert!(a.authorize("User:b", LOCAL, Write, Topic, "app-"));
        assert!(a.authorize("User:c", LOCAL, Write, Topic, "üx"));
        // Prefix lengths falling inside a multi-byte character are skipped.
        assert!(!a.authorize("User:c", LOCAL, Write, Topic, "é"));
        assert!(!a.authorize("User:a", LOCAL, Write, Topic, ""));
    }

    #[test]
    fn wildcards_and_hosts() {
        let a = Authorizer::new([
            b(
                Topic,
                "*",
                Literal,
                "User:*",
                "127.0.0.1",
                Read,
                Permission::Allow,
            ),
            b(
                Group,
                "g",
                Literal,
                "User:alice",
                "*",
                Read,
                Permission::Allow,
            ),
        ]);
        assert!(a.authorize("User:anyone", LOCAL, Read, Topic, "t"));
        assert!(!a.authorize("User:anyone", OTHER, Read, Topic, "t"));
        // IPv4-mapped IPv6 is the same host.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(a.authorize("User:anyone", mapped, Read, Topic, "t"));
        // User:* matches users only.
        assert!(!a.authorize("Group:x", LOCAL, Read, Topic, "t"));
        assert!(a.authorize("User:alice", OTHER, Read, Group, "g"));
        // The literal "*" resource name is not a prefix wildcard for another type.
        assert!(!a.authorize("User:alice", OTHER, Read, Group, "h"));
    }

    #[test]
    fn implied_operations() {
        let a = Authorizer::new([
            topic_allow("r", Literal, "User:u", Read),
            topic_allow("w", Literal, "User:u", Write),
            topic_allow("d", Literal, "User:u", Delete),
            topic_allow("al", Literal, "User:u", Alter),
            topic_allow("c", Literal, "User:u", Create),
            topic_allow("ac", Literal, "User:u", AlterConfigs),
            topic_allow("all", Literal, "User:u", All),
        ]);
        for t in ["r", "w", "d", "al", "all"] {
            assert!(a.authorize("User:u", LOCAL, Describe, Topic, t), "{t}");
        }
        assert!(!a.authorize("User:u", LOCAL, Describe, Topic, "c"));
        assert!(a.authorize("User:u", LOCAL, DescribeConfigs, Topic, "ac"));
        assert!(!a.authorize("User:u", LOCAL, DescribeConfigs, Topic, "r"));
        assert!(!a.authorize("User:u", LOCAL, Read, Topic, "w"));
        assert!(a.authorize("User:u", LOCAL, IdempotentWrite, Topic, "all"));
    }

    #[test]
    fn authorize_any_of_type() {
        let a = Authorizer::new([
            topic_allow("app-", Prefixed, "User:a", Read),
            topic_allow("x", Literal, "User:b", Read),
            b(Topic, "x", Literal, "User:b", "*", Read, Permission::Deny),
            topic_allow("app-1", Literal, "User:c", Write),
            b(Topic, "app", Prefixed, "User:c", "*", All, Permission::Deny),
            topic_allow("y", Literal, "User:d", Read),
            b(Topic, "*", Literal, "User:d", "*", Read, Permission::Deny),
        ]);
        assert!(a.authorize_any("User:a", LOCAL, Read, Topic));
        assert!(a.authorize_any("User:a", LOCAL, Describe, Topic));
        assert!(!a.authorize_any("User:a", LOCAL, Write, Topic));
        assert!(!a.authorize_any("User:a", LOCAL, Read, Group));
        assert!(!a.authorize_any("User:b", LOCAL, Read, Topic));
        assert!(!a.authorize_any("User:c", LOCAL, Write, Topic));
        assert!(!a.authorize_any("User:d", LOCAL, Read, Topic));
        assert!(!a.authorize_any("User:nobody", LOCAL, Read, Topic));
    }

    #[test]
    fn filters() {
        let lit = topic_allow("orders", Literal, "User:a", Read);
        let star = topic_allow("*", Literal, "User:a", Read);
        let pre = topic_allow("ord", Prefixed, "User:a", Read);
        let other = topic_allow("x", Prefixed, "User:a", Read);
        let all = [&lit, &star, &pre, &other];
        let hits = |f: &AclFilter| all.iter().filter(|b| f.matches(b)).count();

        assert_eq!(hits(&AclFilter::default()), 4);
        let mut f = AclFilter {
            name: Some("orders".into()),
            pattern: Some(PatternType::Match),
            ..Default::default()
        };
        assert!(f.matches(&lit) && f.matches(&star) && f.matches(&pre) && !f.matches(&other));
        f.pattern = None;
        assert_eq!(hits(&f), 1);
        f.pattern = Some(PatternType::Any);
        assert_eq!(hits(&f), 1);
        f.pattern = Some(Prefixed);
        assert_eq!(hits(&f), 0);
        f.name = None;
        assert_eq!(hits(&f), 2);

        let f = AclFilter {
            resource_type: Some(ResourceType::Any),
            operation: Some(Any),
            permission: Some(Permission::Any),
            ..Default::default()
        };
        assert_eq!(hits(&f), 4);
        let f = AclFilter {
            permission: Some(Permission::Deny),
            ..Default::default()
        };
        assert_eq!(hits(&f), 0);
        let f = AclFilter {
            principal: Some("User:b".into()),
            ..Default::default()
        };
        assert_eq!(hits(&f), 0);
        let f = AclFilter {
            host: Some("*".into()),
            resource_type: Some(Group),
            ..Default::default()
        };
        assert_eq!(hits(&f), 0);
        assert!(AclFilter::exact(&pre).matches(&pre));
        assert!(!AclFilter::exact(&pre).matches(&lit));
    }

    #[test]
    fn validation() {
        let good = topic_allow("t", Literal, "User:a", Read);
        assert!(good.validate().is_ok());
        let bads = [
            AclBinding {
                resource_type: ResourceType::Any,
                ..good.clone()
            },
            AclBinding {
                pattern: PatternType::Match,
                ..good.clone()
            },
            AclBinding {
                pattern: PatternType::Any,
                ..good.clone()
            },
            AclBinding {
                operation: Any,
                ..good.clone()
            },
            AclBinding {
                permission: Permission::Any,
                ..good.clone()
            },
            AclBinding {
                name: String::new(),
                ..good.clone()
            },
            AclBinding {
                principal: "alice".into(),
                ..good.clone()
            },
            AclBinding {
                principal: "User:".into(),
                ..good.clone()
            },
            AclBinding {
                principal: ":a".into(),
                ..good.clone()
            },
            AclBinding {
                host: "example.com".into(),
                ..good.clone()
            },
            AclBinding {
                host: String::new(),
                ..good.clone()
            },
        ];
        for bad in &bads {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(AclBinding {
            host: "::1".into(),
            ..good.clone()
        }
        .validate()
        .is_ok());
        // Invalid bindings never grant anything.
        let a = Authorizer::new([AclBinding {
            host: "nope".into(),
            ..good.clone()
        }]);
        assert!(!a.authorize("User:a", LOCAL, Read, Topic, "t"));
        assert_eq!(a.bindings().len(), 1);
    }

    #[test]
    fn codes_and_names_round_trip() {
        fn check<T: Copy + Eq + fmt::Debug + fmt::Display + FromStr>(
            all: &[T],
            to: fn(T) -> i8,
            from: fn(i8) -> Option<T>,
        ) where
            T::Err: fmt::Debug,
        {
            for (i, v) in all.iter().enumerate() {
                assert_eq!(to(*v), i as i8 + 1);
                assert_eq!(from(to(*v)), Some(*v));
                assert_eq!(v.to_string().parse::<T>().unwrap(), *v);
            }
            assert_eq!(from(0), None);
            assert_eq!(from(-1), None);
            assert_eq!(from(all.len() as i8 + 1), None);
        }
        check(
            ResourceType::ALL,
            ResourceType::to_i8,
            ResourceType::from_i8,
        );
        check(PatternType::ALL, PatternType::to_i8, PatternType::from_i8);
        check(Operation::ALL, Operation::to_i8, Operation::from_i8);
        check(Permission::ALL, Permission::to_i8, Permission::from_i8);
        assert_eq!(Operation::ALL.len(), 12);
        assert_eq!(DescribeConfigs.to_string(), "describe-configs");
        assert_eq!(
            "DescribeConfigs".parse::<Operation>().unwrap(),
            DescribeConfigs
        );
        assert_eq!(
            "IDEMPOTENT_WRITE".parse::<Operation>().unwrap(),
            IdempotentWrite
        );
        assert_eq!(
            "transactional-id".parse::<ResourceType>().unwrap(),
            ResourceType::TransactionalId
        );
        assert!("reed".parse::<Operation>().is_err());
        let json =
            serde_json::to_string(&topic_allow("t", Prefixed, "User:a", ClusterAction)).unwrap();
        assert!(json.contains("\"cluster-action\"") && json.contains("\"prefixed\""));
    }

    #[test]
    fn many_bindings() {
        let bindings: Vec<_> = (0..5000)
            .map(|i| {
                topic_allow(
                    &format!("t{i}"),
                    if i % 2 == 0 { Literal } else { Prefixed },
                    &format!("User:u{}", i % 50),
                    Read,
                )
            })
            .collect();
        let a = Authorizer::new(bindings);
        assert!(a.authorize("User:u10", LOCAL, Read, Topic, "t10"));
        assert!(a.authorize("User:u11", LOCAL, Read, Topic, "t11-x"));
        assert!(!a.authorize("User:u11", LOCAL, Read, Topic, "t10"));
    }
}
