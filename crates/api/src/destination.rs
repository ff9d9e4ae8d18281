//! The SSRF check at subscription creation: a destination whose host is, or resolves to, an
//! address the [`DestinationPolicy`] refuses is refused before it is stored. The worker checks
//! again on the addresses it connects to, so a name that changes its answers later (DNS
//! rebinding) or did not resolve here is still stopped there.

use std::net::IpAddr;
use std::time::Duration;

use dispatch_domain::DestinationUrl;
use dispatch_domain::destination::DestinationPolicy;
use dispatch_domain::url::Host;

use crate::error::ApiError;

/// How long a subscription's host name may take to resolve before it is accepted unchecked.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// `Ok` unless the URL's host is an address the policy refuses, or a name that resolves (within
/// [`RESOLVE_TIMEOUT`]) to at least one such address. A name that does not resolve — no such
/// domain, no answer in time, no resolver — is accepted: nothing can be sent to it until it
/// does, and then the worker's connect-time check applies.
pub async fn check(policy: &DestinationPolicy, url: &DestinationUrl) -> Result<(), ApiError> {
    let host = url.host();
    let addresses: Vec<IpAddr> = match &host {
        Host::Ip(ip) => vec![*ip],
        // `example.com.` is `example.com`: some resolvers only know the second spelling.
        Host::Name(name) => resolve(name.strip_suffix('.').unwrap_or(name)).await,
    };
    match policy.first_refused(addresses) {
        None => Ok(()),
        Some(refused) => {
            let what = match host {
                Host::Ip(_) => refused.to_string(),
                Host::Name(name) => format!(
                    "{name} resolves to {}, {}",
                    refused.address,
                    refused.reason.an_address()
                ),
            };
            Err(ApiError::DestinationRefused(format!(
                "url: {what}; webhooks are not sent to such addresses (an operator can allow a \
                 range with DISPATCH_ALLOW_DESTINATIONS)"
            )))
        }
    }
}

/// The addresses `name` resolves to with the system resolver, or none if it does not resolve
/// in time.
async fn resolve(name: &str) -> Vec<IpAddr> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, 0))).await {
        Ok(Ok(addresses)) => addresses.map(|a| a.ip()).collect(),
        Ok(Err(error)) => {
            tracing::debug!(host = name, %error, "destination host does not resolve; accepted");
            Vec::new()
        }
        Err(_) => {
            tracing::debug!(
                host = name,
                "destination host did not resolve in time; accepted"
            );
            Vec::new()
        }
    }
}
