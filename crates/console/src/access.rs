//! Who signed in and what their key's scope lets the console offer: the API resolves keys.
//!
//! The console never judges a key itself. [`Access`], handed in by `dispatch-api`, runs the
//! API's one resolution (`auth::resolve`) for a key typed into the sign-in form and, on every
//! request, for the key a session was signed in with; the API checks each action's scope
//! again where it runs it. [`Can`] only decides which buttons a page shows.

use dispatch_domain::TenantId;
use dispatch_domain::api_key::Scope;

use crate::actions::routes;

/// The key behind a session, as the API resolved it just now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The database key's id; `None` for a key of `DISPATCH_API_KEYS` (an admin).
    pub key_id: Option<String>,
    pub scope: Scope,
    /// The tenant the session works in: a tenant key's own, else `default`.
    pub tenant: TenantId,
}

/// The API's side of signing in: what a key is, and what a session's key is now.
pub trait Access: Send + Sync {
    /// Who the key typed into the sign-in form is; `None` when the API does not accept it.
    fn sign_in(&self, key: &str) -> Option<Signer>;
    /// Who a session signed in by `key_id` is now; `None` once that key is revoked or expired.
    fn current(&self, key_id: Option<&str>) -> Option<Signer>;
}

/// Whether a key of `scope` can read anything the console shows (an `ingest` key cannot).
pub fn reads(scope: &Scope) -> bool {
    scope.permits("GET", "/events") && scope.permits("GET", "/subscriptions")
}

/// Which of the console's changes a scope allows, each judged by the JSON route it performs
/// ([`routes`]): the pages show a form only when its action would be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Can {
    pub create: bool,
    /// Edit, pause, resume.
    pub patch: bool,
    pub delete: bool,
    pub rotate: bool,
    pub test: bool,
    pub retry: bool,
    /// Replays, and the wizard's dry-run count (also `POST /replays`).
    pub replay: bool,
}

impl Can {
    pub fn of(scope: &Scope) -> Self {
        let may = |(method, route): (&str, &str)| scope.permits(method, route);
        Self {
            create: may(routes::CREATE_SUBSCRIPTION),
            patch: may(routes::PATCH_SUBSCRIPTION),
            delete: may(routes::DELETE_SUBSCRIPTION),
            rotate: may(routes::ROTATE_SECRET),
            test: may(routes::SEND_TEST),
            retry: may(routes::RETRY_DELIVERY),
            replay: may(routes::CREATE_REPLAY),
        }
    }

    /// Whether this scope may change anything at all.
    pub fn anything(&self) -> bool {
        self.create
            || self.patch
            || self.delete
            || self.rotate
            || self.test
            || self.retry
            || self.replay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_key_reads_everything_and_can_change_nothing() {
        let tenant = TenantId::default_tenant();
        for read in [Scope::Read, Scope::TenantRead(tenant.clone())] {
            assert!(reads(&read));
            assert!(!Can::of(&read).anything(), "{read}");
        }
        assert!(reads(&Scope::Tenant(tenant.clone())));
        assert_eq!(
            Can::of(&Scope::Tenant(tenant.clone())),
            Can::of(&Scope::Admin)
        );
        assert_eq!(
            Can::of(&Scope::Admin),
            Can {
                create: true,
                patch: true,
                delete: true,
                rotate: true,
                test: true,
                retry: true,
                replay: true,
            }
        );
        assert!(reads(&Scope::Admin));
        assert!(
            !reads(&Scope::Ingest(tenant)),
            "an ingest key reads nothing"
        );
    }
}
