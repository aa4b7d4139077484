//! Access: API keys, their scopes, and who may call what.
//!
//! A key is a random secret shown once when it is made (`fluxflow keys add`); only its SHA-256
//! hash is kept, in the store the service uses ([`keys`]). Each node holds the live keys in
//! memory and reads them again every [`REFRESH`], so a revoked key stops working everywhere
//! within 5 s ([`guard`]). Until the first key is made the API is open; once one has existed it
//! never reopens.

pub mod guard;
pub mod keys;

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

pub use guard::{Access, Denied, Need};

/// How often a node reads the keys again: under the 5 s §9 allows for a revocation.
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// What a key may do. Scopes are independent (a write scope does not grant the read one);
/// `admin` grants all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `POST /v1/events`, `POST /v1/events/batch`.
    EventsWrite,
    /// `GET /v1/jobs/{job_id}`.
    EventsRead,
    /// Reads of a member: balance, ledger, lots.
    MembersRead,
    /// Redeem, adjust, cancel a redemption.
    MembersWrite,
    /// The live rules, their versions, simulate.
    RulesRead,
    /// Reload, publish, roll back.
    RulesWrite,
    /// `GET /metrics`.
    MetricsRead,
    /// Everything.
    Admin,
}

impl Scope {
    /// Every scope, in the order they are listed.
    pub const ALL: [Scope; 8] = [
        Scope::EventsWrite,
        Scope::EventsRead,
        Scope::MembersRead,
        Scope::MembersWrite,
        Scope::RulesRead,
        Scope::RulesWrite,
        Scope::MetricsRead,
        Scope::Admin,
    ];

    /// The scope's name, `events:write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsWrite => "events:write",
            Scope::EventsRead => "events:read",
            Scope::MembersRead => "members:read",
            Scope::MembersWrite => "members:write",
            Scope::RulesRead => "rules:read",
            Scope::RulesWrite => "rules:write",
            Scope::MetricsRead => "metrics:read",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{given}`{hint}")]
pub struct UnknownScope {
    given: String,
    hint: String,
}

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(name: &str) -> Result<Scope, UnknownScope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == name).ok_or_else(|| UnknownScope {
            given: name.to_owned(),
            hint: crate::suggest::suggestion(name, &Scope::ALL.map(Scope::as_str)),
        })
    }
}

/// Parses `events:write,members:read`: at least one scope, none unknown, duplicates dropped.
pub fn parse_scopes(list: &str) -> Result<Vec<Scope>, UnknownScope> {
    let mut scopes =
        list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Scope::from_str).collect::<Result<Vec<_>, _>>()?;
    scopes.sort_unstable();
    scopes.dedup();
    Ok(scopes)
}

/// A key's name: 1 to 64 characters of letters, digits, `.`, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyName(String);

/// A key name that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key name is 1 to 64 letters, digits, `.`, `_` or `-`; got `{0}`")]
pub struct BadKeyName(String);

impl KeyName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyName {
    type Err = BadKeyName;

    fn from_str(name: &str) -> Result<KeyName, BadKeyName> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if (1..=64).contains(&name.len()) && name.chars().all(allowed) {
            Ok(KeyName(name.to_owned()))
        } else {
            Err(BadKeyName(name.chars().take(80).collect()))
        }
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The SHA-256 of a key: all that is stored of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// The hash of the key a client presented.
    pub fn of(secret: &str) -> KeyHash {
        KeyHash(Sha256::digest(secret.as_bytes()).into())
    }
}

/// A new key's secret: `ff_` and 32 random bytes in hex (256 bits).
pub struct NewKey {
    /// What the client sends after `Bearer `; shown once.
    pub secret: String,
    /// What is stored.
    pub hash: KeyHash,
}

/// The operating system gave no random bytes.
#[derive(Debug, thiserror::Error)]
#[error("no random bytes from the operating system: {0}")]
pub struct NoRandomness(String);

impl NewKey {
    /// Draws a new key from the operating system's random source.
    pub fn generate() -> Result<NewKey, NoRandomness> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| NoRandomness(e.to_string()))?;
        let mut secret = String::with_capacity(3 + 64);
        secret.push_str("ff_");
        for byte in bytes {
            secret.push_str(&format!("{byte:02x}"));
        }
        let hash = KeyHash::of(&secret);
        Ok(NewKey { secret, hash })
    }
}

/// Who called: the key's name and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's name (recorded as the author of rules changes).
    pub name: KeyName,
    /// Its scopes.
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// Whether the key may act with `scope`: it has it, or `admin`.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| *s == scope || *s == Scope::Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_by_name_and_unknown_ones_are_named_with_a_suggestion() {
        assert_eq!(
            parse_scopes("members:read, events:write,events:write").unwrap(),
            vec![Scope::EventsWrite, Scope::MembersRead]
        );
        let error = parse_scopes("event:write").unwrap_err().to_string();
        assert!(error.contains("`event:write`") && error.contains("did you mean `events:write`"), "{error}");
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
    }

    #[test]
    fn admin_grants_every_scope_and_the_others_only_themselves() {
        let name: KeyName = "shop".parse().unwrap();
        let writer = Principal { name: name.clone(), scopes: vec![Scope::EventsWrite] };
        assert!(writer.allows(Scope::EventsWrite));
        assert!(!writer.allows(Scope::EventsRead), "a write scope does not grant the read one");
        let admin = Principal { name, scopes: vec![Scope::Admin] };
        assert!(Scope::ALL.iter().all(|s| admin.allows(*s)));
    }

    #[test]
    fn keys_carry_256_random_bits_and_names_are_checked() {
        let (a, b) = (NewKey::generate().unwrap(), NewKey::generate().unwrap());
        assert_eq!(a.secret.len(), 67);
        assert_ne!(a.secret, b.secret);
        assert_eq!(KeyHash::of(&a.secret), a.hash);
        assert!("ci-shop_1.eu".parse::<KeyName>().is_ok());
        assert!("".parse::<KeyName>().is_err());
        assert!("a b".parse::<KeyName>().is_err());
        assert!("x".repeat(65).parse::<KeyName>().is_err());
    }
}
