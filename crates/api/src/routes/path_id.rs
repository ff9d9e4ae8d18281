//! The `{id}` of a route's path, parsed by one extractor ([`PathId`]) for every route that has
//! one. An id that could never have been accepted cannot exist, so it is answered `404` with the
//! same message as an unknown one: `no <noun> with id "<the path's text>"`.

use std::future::{Ready, ready};
use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use dispatch_domain::{EventId, ReplayId, SubscriptionId};

use crate::error::ApiError;

/// What a path `{id}` may name.
pub(crate) trait Identified: Sized {
    /// The thing named, as a `404` says it.
    const NOUN: &'static str;

    /// The id, or `None` for text that no such thing could have as its id.
    fn parse(text: &str) -> Option<Self>;
}

impl Identified for EventId {
    const NOUN: &'static str = "event";
    fn parse(text: &str) -> Option<Self> {
        EventId::parse(text).ok()
    }
}

impl Identified for SubscriptionId {
    const NOUN: &'static str = "subscription";
    fn parse(text: &str) -> Option<Self> {
        SubscriptionId::parse(text).ok()
    }
}

impl Identified for ReplayId {
    const NOUN: &'static str = "replay";
    fn parse(text: &str) -> Option<Self> {
        ReplayId::parse(text).ok()
    }
}

impl Identified for dispatch_domain::api_key::ApiKeyId {
    const NOUN: &'static str = "API key";
    fn parse(text: &str) -> Option<Self> {
        Self::parse(text).ok()
    }
}

impl Identified for dispatch_domain::TenantId {
    const NOUN: &'static str = "tenant";
    fn parse(text: &str) -> Option<Self> {
        Self::parse(text).ok()
    }
}

/// A delivery's id: a positive whole number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeliveryId(pub i64);

impl Identified for DeliveryId {
    const NOUN: &'static str = "delivery";
    fn parse(text: &str) -> Option<Self> {
        text.parse::<i64>().ok().filter(|n| *n > 0).map(DeliveryId)
    }
}

/// `404 not_found` for the thing `text` would name.
fn not_found<T: Identified>(text: &str) -> ApiError {
    ApiError::NotFound(format!("no {} with id {text:?}", T::NOUN))
}

/// The path's `{id}`, parsed as a `T`; derefs to the `T`.
#[derive(Debug)]
pub(crate) struct PathId<T> {
    id: T,
    /// As the path gave it (decoded), for the `404` message.
    text: String,
}

impl<T: Identified> PathId<T> {
    /// Parses `text` (the decoded path segment): `Err(404)` when no `T` could have it as its id.
    pub(crate) fn parse(text: String) -> Result<Self, ApiError> {
        match T::parse(&text) {
            Some(id) => Ok(Self { id, text }),
            None => Err(not_found::<T>(&text)),
        }
    }

    /// `404 not_found` for this id, when the store has nothing by it.
    pub(crate) fn not_found(&self) -> ApiError {
        not_found::<T>(&self.text)
    }
}

impl<T> Deref for PathId<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.id
    }
}

impl<T: Identified> FromRequest for PathId<T> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        // Decoded as `web::Path<String>` decodes it, so a 404 names what the caller meant.
        let segment = web::Path::<String>::from_request(req, payload).into_inner();
        ready(match segment {
            Ok(text) => Self::parse(text.into_inner()),
            Err(error) => Err(ApiError::Internal(anyhow::anyhow!(
                "route {:?} has no single {{id}} segment: {error}",
                req.match_pattern()
            ))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message<T: Identified + std::fmt::Debug>(text: &str) -> String {
        PathId::<T>::parse(text.to_owned())
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn an_id_that_could_never_exist_is_not_found_under_its_own_noun() {
        assert_eq!(message::<EventId>("evt 1"), r#"no event with id "evt 1""#);
        assert_eq!(
            message::<SubscriptionId>(".."),
            r#"no subscription with id "..""#
        );
        assert_eq!(message::<ReplayId>("r/1"), r#"no replay with id "r/1""#);
        for bad in ["0", "-3", "x", "1.5", "99999999999999999999"] {
            assert_eq!(
                message::<DeliveryId>(bad),
                format!("no delivery with id {bad:?}")
            );
        }
    }

    #[test]
    fn a_valid_id_parses_and_its_404_names_the_text_as_given() {
        let event = PathId::<EventId>::parse("evt_1".to_owned()).expect("valid");
        assert_eq!(event.as_str(), "evt_1");
        assert_eq!(event.not_found().code(), "not_found");
        let delivery = PathId::<DeliveryId>::parse("007".to_owned()).expect("valid");
        assert_eq!(*delivery, DeliveryId(7));
        assert_eq!(
            delivery.not_found().to_string(),
            r#"no delivery with id "007""#
        );
    }
}
