//! The console's routes, one module per page family. Each handler takes the
//! [`Session`](crate::session::Session) first (so nothing runs for a visitor who is not signed
//! in), reads through the store functions the JSON API calls, and renders its template with
//! [`crate::error::html`].

mod deliveries;
mod events;
mod failed;
mod overview;
mod sign_in;
mod subscription_actions;
mod subscription_edit;
mod subscriptions;

use actix_web::{HttpResponse, web};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(overview::page))
        .route("/", web::get().to(overview::page))
        .route("/events", web::get().to(events::list))
        .route("/events/{id}", web::get().to(events::show))
        .route("/subscriptions", web::get().to(subscriptions::list))
        .route(
            "/subscriptions",
            web::post().to(subscription_actions::create),
        )
        .route(
            "/subscriptions/new",
            web::get().to(subscription_actions::new_form),
        )
        .route("/subscriptions/{id}", web::get().to(subscriptions::show))
        .route(
            "/subscriptions/{id}",
            web::post().to(subscription_edit::change),
        )
        .route(
            "/subscriptions/{id}/test",
            web::post().to(subscription_actions::test),
        )
        .route(
            "/subscriptions/{id}/rotate-secret",
            web::post().to(subscription_actions::rotate),
        )
        .route(
            "/subscriptions/{id}/delete",
            web::get().to(subscription_actions::confirm_delete),
        )
        .route(
            "/subscriptions/{id}/delete",
            web::post().to(subscription_actions::delete),
        )
        .route("/failed", web::get().to(failed::list))
        .route("/failed/retry", web::post().to(failed::retry_selected))
        .route("/replays/new", web::get().to(failed::wizard))
        .route("/replays", web::post().to(failed::start))
        .route("/replays/{id}", web::get().to(failed::progress))
        .route("/deliveries/{id}/retry", web::post().to(deliveries::retry))
        .route("/sign-in", web::get().to(sign_in::form))
        .route("/sign-in", web::post().to(sign_in::submit))
        .route("/sign-out", web::post().to(sign_in::sign_out))
        .route(
            "/assets/{version}/{file}",
            web::get().to(crate::assets::serve),
        );
}

/// `303 See Other` to `location` (after a form's POST).
pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, location.to_owned()))
        .finish()
}
