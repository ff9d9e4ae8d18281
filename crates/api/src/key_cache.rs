//! The database's API keys as one API replica sees them: reloaded every second, so a new key
//! works and a revoked or expired one stops within about a second on every replica, without a
//! request ever waiting for the database to check a key; uses are noted in memory and written
//! back (`last_used_at`) with each reload. The live tenants and their limits are reloaded with
//! them, so a request's tenant is checked without the database too.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dispatch_domain::TenantId;
use dispatch_domain::api_key::{self, ApiKeyId, Scope};
use dispatch_store::pool::{self, Pool};
use dispatch_store::queries::api_keys::{self, ActiveKey};
use dispatch_store::queries::tenants::{self, TenantLimits, TenantRow};
use subtle::ConstantTimeEq;

/// How often every replica reloads the keys: the longest a revoked key keeps working.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

struct CachedKey {
    hash: [u8; 32],
    scope: Scope,
    expires_at: Option<DateTime<Utc>>,
}

/// The active database keys, by id.
#[derive(Default)]
pub struct KeyCache {
    keys: RwLock<HashMap<String, CachedKey>>,
    /// Live tenants but the default one (always live), with their limits.
    tenants: RwLock<HashMap<String, TenantLimits>>,
    used: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl KeyCache {
    /// The id and scope of `presented` when it is an active database key. Its hash is compared
    /// in constant time; its id (the visible part of a key) is what finds it.
    pub fn lookup(&self, presented: &str) -> Option<(ApiKeyId, Scope)> {
        let id = api_key::id_of(presented)?;
        let hash = api_key::hash(presented);
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = keys.get(id.as_str())?;
        let matches: bool = key.hash.ct_eq(&hash).into();
        if !matches || key.expires_at.is_some_and(|at| at <= Utc::now()) {
            return None;
        }
        let scope = key.scope.clone();
        drop(keys);
        lock(&self.used).insert(id.as_str().to_owned());
        Some((id, scope))
    }

    /// Replaces the cached keys with `active` (rows with an unknown scope or a damaged hash
    /// are left out, and logged).
    pub fn replace(&self, active: Vec<ActiveKey>) {
        let mut keys = HashMap::with_capacity(active.len());
        for row in active {
            let (Ok(scope), Ok(hash)) =
                (row.scope.parse::<Scope>(), <[u8; 32]>::try_from(row.hash))
            else {
                tracing::error!(key.id = %row.id, "an API key row is damaged; it is not accepted");
                continue;
            };
            keys.insert(
                row.id,
                CachedKey {
                    hash,
                    scope,
                    expires_at: row.expires_at,
                },
            );
        }
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
    }

    /// The limits of tenant `id` when it is live (the default tenant always is).
    pub fn tenant(&self, id: &TenantId) -> Option<TenantLimits> {
        let tenants = self
            .tenants
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match tenants.get(id.as_str()) {
            Some(limits) => Some(*limits),
            None if id.is_default() => Some(TenantLimits::default()),
            None => None,
        }
    }

    /// Notes a tenant created or changed on this replica (the others see it at their next
    /// reload), so its keys and its `Dispatch-Tenant` work here at once.
    pub fn note_tenant(&self, row: &TenantRow) {
        let mut tenants = self
            .tenants
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if row.deleted_at.is_some() {
            tenants.remove(&row.id);
        } else {
            tenants.insert(row.id.clone(), row.limits());
        }
    }

    /// Replaces the cached tenants with `active`.
    pub fn replace_tenants(&self, active: Vec<TenantRow>) {
        let tenants = active
            .into_iter()
            .map(|row| {
                let limits = row.limits();
                (row.id, limits)
            })
            .collect();
        *self
            .tenants
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tenants;
    }

    /// Reloads the keys and tenants and writes back the keys' uses, once.
    pub async fn reload(&self, pool: &Pool) -> Result<(), dispatch_store::StoreError> {
        let mut conn = pool::connection(pool).await?;
        let used: Vec<String> = lock(&self.used).drain().collect();
        if let Err(e) = api_keys::touch(&mut conn, &used).await {
            lock(&self.used).extend(used);
            return Err(e);
        }
        self.replace(api_keys::active(&mut conn).await?);
        self.replace_tenants(tenants::active(&mut conn).await?);
        Ok(())
    }

    /// Reloads every [`RELOAD_EVERY`] until the runtime stops; a failed reload keeps the keys
    /// it had (logged once until one succeeds).
    pub fn spawn_reloads(self: &Arc<Self>, pool: Pool) {
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RELOAD_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut warned = false;
            loop {
                every.tick().await;
                match cache.reload(&pool).await {
                    Ok(()) => warned = false,
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!(error = %e, "could not reload the API keys; keeping the last ones");
                    }
                    Err(_) => {}
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, key: &str, scope: &str, expires_at: Option<DateTime<Utc>>) -> ActiveKey {
        ActiveKey {
            id: id.to_owned(),
            hash: api_key::hash(key).to_vec(),
            scope: scope.to_owned(),
            expires_at,
        }
    }

    #[test]
    fn only_the_whole_key_of_an_active_row_is_accepted_and_uses_are_noted() {
        let key = api_key::generate().expect("random");
        let cache = KeyCache::default();
        assert_eq!(cache.lookup(&key.key), None, "nothing loaded yet");
        cache.replace(vec![row(key.id.as_str(), &key.key, "read", None)]);
        assert_eq!(cache.lookup(&key.key), Some((key.id.clone(), Scope::Read)));
        assert_eq!(cache.lookup(&format!("{}x", key.key)), None);
        assert_eq!(cache.lookup(key.id.as_str()), None);
        assert!(lock(&cache.used).contains(key.id.as_str()));

        let past = Utc::now() - chrono::Duration::seconds(1);
        cache.replace(vec![row(key.id.as_str(), &key.key, "read", Some(past))]);
        assert_eq!(
            cache.lookup(&key.key),
            None,
            "expired since the last reload"
        );
        cache.replace(vec![row(key.id.as_str(), &key.key, "owner", None)]);
        assert_eq!(
            cache.lookup(&key.key),
            None,
            "a damaged row is not accepted"
        );
        cache.replace(Vec::new());
        assert_eq!(cache.lookup(&key.key), None, "revoked");
    }
}
