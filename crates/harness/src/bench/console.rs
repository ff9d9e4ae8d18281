//! The `console` scenario (issue 18): on the `list` scenario's seeded month of history (a
//! million deliveries by default) and `dispatch-api` with the shipped defaults, sign in to the
//! console once, then request each console page `--list-samples` times, one at a time, and
//! report p50/p99 per page as the client saw it (the target: under 100 ms p99).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dispatch_store::queries::bench::list::ListFacts;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use hyper::{Request, StatusCode};

use super::stats;
use crate::http::HttpClient;

/// Longest wait for one page.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// A page slower than this at p99 misses the target.
pub const TARGET_P99_MS: f64 = 100.0;

/// One page's timings.
pub struct ConsoleRow {
    pub name: String,
    pub latency: Option<stats::Latency>,
    pub errors: u64,
}

/// The pages timed, by name: every page family, with the filters an operator uses most.
pub fn pages(facts: &ListFacts) -> Vec<(String, String)> {
    [
        ("overview", "/console/".to_owned()),
        ("events", "/console/events".to_owned()),
        (
            "events status=failed",
            "/console/events?status=failed".to_owned(),
        ),
        (
            "events type=invoice.*",
            "/console/events?type=invoice.*".to_owned(),
        ),
        (
            "events subscription_id=sub-7",
            "/console/events?subscription_id=sub-7".to_owned(),
        ),
        (
            "event page (failed)",
            format!("/console/events/{}", facts.failed_event),
        ),
        ("subscriptions", "/console/subscriptions".to_owned()),
        (
            "subscription page",
            "/console/subscriptions/sub-0".to_owned(),
        ),
        ("failed deliveries", "/console/failed".to_owned()),
        (
            "failed deliveries subscription_id=sub-2",
            "/console/failed?subscription_id=sub-2".to_owned(),
        ),
        (
            "replay wizard count sub-2",
            "/console/replays/new?subscription_id=sub-2".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(n, p)| (n.to_owned(), p))
    .collect()
}

async fn send(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
) -> Option<(StatusCode, Vec<String>, Bytes)> {
    let answer = async {
        let response = client.request(request).await.ok()?;
        let status = response.status();
        let cookies = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().to_owned())
            .collect();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, cookies, body))
    };
    tokio::time::timeout(PAGE_TIMEOUT, answer).await.ok()?
}

/// Signs in with `api_key`; the session cookie (`name=value`).
pub async fn sign_in(client: &HttpClient, base: &str, api_key: &str) -> Result<String> {
    let form = Request::get(format!("{base}/console/sign-in")).body(Full::new(Bytes::new()))?;
    let (status, cookies, body) = send(client, form).await.context("no sign-in page")?;
    if status != StatusCode::OK {
        bail!("GET /console/sign-in answered {status}");
    }
    let page = String::from_utf8_lossy(&body);
    let marker = "name=\"csrf\" value=\"";
    let csrf = page
        .split(marker)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("no CSRF field on the sign-in page")?;
    let body = serde_urlencoded::to_string([("csrf", csrf), ("api_key", api_key)])?;
    let post = Request::post(format!("{base}/console/sign-in"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(COOKIE, cookies.join("; "))
        .body(Full::new(Bytes::from(body)))?;
    let (status, cookies, _) = send(client, post).await.context("no sign-in answer")?;
    if status != StatusCode::SEE_OTHER {
        bail!("POST /console/sign-in answered {status}");
    }
    cookies
        .into_iter()
        .find(|c| c.starts_with("dispatch_console="))
        .context("no session cookie")
}

/// `samples` requests of each page (after one unmeasured one).
pub async fn measure(
    client: &HttpClient,
    base: &str,
    cookie: &str,
    facts: &ListFacts,
    samples: u64,
) -> Result<Vec<ConsoleRow>> {
    let mut rows = Vec::new();
    for (name, path) in pages(facts) {
        let (mut took, mut errors) = (Vec::new(), 0);
        for i in 0..=samples {
            let request = Request::get(format!("{base}{path}"))
                .header(COOKIE, cookie)
                .body(Full::new(Bytes::new()))?;
            let started = Instant::now();
            let answer = send(client, request).await;
            let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            match answer {
                Some((StatusCode::OK, _, _)) if i > 0 => took.push(ns),
                Some((StatusCode::OK, _, _)) => {}
                other => {
                    errors += 1;
                    eprintln!("bench:   {path}: {:?}", other.map(|(s, _, _)| s));
                }
            }
        }
        let latency = stats::summarize(&mut took);
        eprintln!(
            "bench:   console {name}: p50 {} ms",
            latency.map_or_else(|| "-".to_owned(), |l| format!("{:.1}", l.p50))
        );
        rows.push(ConsoleRow {
            name,
            latency,
            errors,
        });
    }
    Ok(rows)
}

/// The report's table: page, p50, p99, max, and whether p99 misses the target.
pub fn table(rows: &[ConsoleRow]) -> String {
    let mut out = format!(
        "{:<40}  {:>8}  {:>8}  {:>8}  {:>6}  {}\n{}\n",
        "console page",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "over 100 ms",
        "-".repeat(86)
    );
    for row in rows {
        let (p50, p99, max) = row.latency.map_or_else(
            || ("-".to_owned(), "-".to_owned(), "-".to_owned()),
            |l| {
                (
                    format!("{:.1}", l.p50),
                    format!("{:.1}", l.p99),
                    format!("{:.1}", l.max),
                )
            },
        );
        let slow = row.latency.is_some_and(|l| l.p99 > TARGET_P99_MS);
        out.push_str(&format!(
            "{:<40}  {p50:>8}  {p99:>8}  {max:>8}  {:>6}  {}\n",
            row.name,
            row.errors,
            if slow { "SLOW" } else { "" }
        ));
    }
    out
}
