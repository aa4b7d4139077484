//! The check in front of every route: which key a request carries (`Authorization: Bearer KEY`),
//! whether it is live, and whether it has the scope the route needs. The live keys are held in
//! memory and read again from the store every [`super::REFRESH`].

use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;

use super::keys::{KeyError, KeySet, KeyStore};
use super::{KeyHash, Principal, Scope};

/// What a route asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health, readiness, the API description.
    Open,
    /// A live key, whatever its scopes (paths that match no route, so they answer 404 only to a
    /// caller who may know the API).
    Key,
    /// A live key with this scope (or `admin`).
    Scope(Scope),
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No key, an unknown key or a revoked one: 401.
    Unauthorized,
    /// A live key without the scope: 403.
    Forbidden(Scope),
}

/// The live keys of this node, and the store they are read from.
pub struct Access {
    store: Option<Arc<dyn KeyStore>>,
    keys: ArcSwap<KeySet>,
}

impl Access {
    /// Access with no key store: every route is open (a library user's own service, tests).
    pub fn open() -> Arc<Access> {
        Arc::new(Access { store: None, keys: ArcSwap::from_pointee(KeySet::default()) })
    }

    /// Reads the keys of `store`; the caller keeps them current with [`Access::keep_fresh`].
    pub fn load(store: Arc<dyn KeyStore>) -> Result<Arc<Access>, KeyError> {
        let keys = store.key_set()?;
        Ok(Arc::new(Access { store: Some(store), keys: ArcSwap::from_pointee(keys) }))
    }

    /// Whether the API is open: no key was ever made.
    pub fn is_open(&self) -> bool {
        !self.keys.load().ever
    }

    /// Reads the keys again. Once keys have existed the API stays closed, even if the store
    /// no longer says so (a deleted keys file).
    pub fn refresh(&self) -> Result<(), KeyError> {
        let Some(store) = &self.store else { return Ok(()) };
        let mut keys = store.key_set()?;
        keys.ever |= self.keys.load().ever;
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// Reads the keys again every [`super::REFRESH`] while this `Access` is in use; a failed
    /// read keeps the keys read before.
    pub fn keep_fresh(self: &Arc<Self>) {
        if self.store.is_none() {
            return;
        }
        let weak: Weak<Access> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(super::REFRESH).await;
                let Some(access) = weak.upgrade() else { return };
                match tokio::task::spawn_blocking(move || access.refresh()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot read the API keys again; keeping the ones read before")
                    }
                    Err(e) => tracing::warn!(error = %e, "the API keys read stopped"),
                }
            }
        });
    }

    /// Checks a request's `Authorization` header against what its route needs; answers who
    /// called (`None` while the API is open or for an open route).
    pub fn check(&self, authorization: Option<&[u8]>, need: Need) -> Result<Option<Arc<Principal>>, Denied> {
        if need == Need::Open {
            return Ok(None);
        }
        let keys = self.keys.load();
        if !keys.ever {
            return Ok(None);
        }
        let principal =
            bearer(authorization).and_then(|secret| keys.live.get(&KeyHash::of(secret))).ok_or(Denied::Unauthorized)?;
        match need {
            Need::Scope(scope) if !principal.allows(scope) => Err(Denied::Forbidden(scope)),
            _ => Ok(Some(Arc::clone(principal))),
        }
    }
}

/// The key of `Bearer KEY` (the scheme in any case, as RFC 9110 allows).
fn bearer(authorization: Option<&[u8]>) -> Option<&str> {
    let value = std::str::from_utf8(authorization?).ok()?;
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim()).filter(|key| !key.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::keys::SqliteKeys;
    use crate::access::{KeyName, NewKey};

    #[test]
    fn open_until_a_key_exists_then_each_route_needs_its_scope() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteKeys::under(dir.path()));
        let access = Access::load(store.clone()).unwrap();
        let writes = Need::Scope(Scope::EventsWrite);
        assert_eq!(access.check(None, writes), Ok(None), "no key yet: open");

        let key = NewKey::generate().unwrap();
        let name: KeyName = "shop".parse().unwrap();
        store.add(&name, &[Scope::EventsWrite], key.hash, "t").unwrap();
        access.refresh().unwrap();
        let header = format!("Bearer {}", key.secret);
        assert_eq!(access.check(None, writes), Err(Denied::Unauthorized));
        assert_eq!(access.check(Some(b"Bearer ff_nope"), writes), Err(Denied::Unauthorized));
        assert_eq!(access.check(Some(header.as_bytes()), writes).unwrap().unwrap().name, name);
        let lower = format!("bearer {}", key.secret);
        assert!(access.check(Some(lower.as_bytes()), writes).is_ok());
        let reads = Need::Scope(Scope::EventsRead);
        assert_eq!(access.check(Some(header.as_bytes()), reads), Err(Denied::Forbidden(Scope::EventsRead)));
        assert_eq!(access.check(None, Need::Open), Ok(None));

        store.revoke(&name, "t").unwrap();
        access.refresh().unwrap();
        assert_eq!(access.check(Some(header.as_bytes()), writes), Err(Denied::Unauthorized));
        std::fs::remove_file(dir.path().join(crate::access::keys::FILE_NAME)).unwrap();
        access.refresh().unwrap();
        assert_eq!(access.check(None, writes), Err(Denied::Unauthorized), "never reopens");
    }
}
