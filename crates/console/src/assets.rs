//! The script and stylesheet, embedded in the binary and served with long caching (their URLs
//! carry the version, so a new release is fetched anew).

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};

/// htmx 2.0.11 (0BSD), unmodified: see `static/NOTICE.md`.
pub const HTMX: &str = include_str!("../static/htmx.min.js");
/// The console's stylesheet.
pub const STYLESHEET: &str = include_str!("../static/console.css");
/// The console's own script: the replay page's select-all box.
pub const SCRIPT: &str = include_str!("../static/console.js");

/// The version in the assets' URLs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, content_type))
        .insert_header((CACHE_CONTROL, "public, max-age=86400"))
        .body(body)
}

pub async fn serve(name: web::Path<(String, String)>) -> HttpResponse {
    let (_version, file) = name.into_inner();
    match file.as_str() {
        "htmx.min.js" => asset("text/javascript; charset=utf-8", HTMX),
        "console.js" => asset("text/javascript; charset=utf-8", SCRIPT),
        "console.css" => asset("text/css; charset=utf-8", STYLESHEET),
        _ => HttpResponse::NotFound()
            .insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"))
            .body("no such asset"),
    }
}
