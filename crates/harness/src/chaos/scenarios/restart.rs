//! The postgres-restart scenario: the database stopped and started under load, each outage timed.

use super::*;

/// One outage of the database, as seen from outside.
struct Outage {
    mode: StopMode,
    /// From the start of sending.
    down_at: Duration,
    up_at: Duration,
    api_ready_while_down: Option<StatusCode>,
    worker_ready_while_down: Option<StatusCode>,
    /// From `up_at` until the worker's `/readyz` (database and LISTEN connection) said 200.
    worker_ready_after: Option<Duration>,
    /// LISTEN backends in the database once the worker was ready again.
    listening: i64,
}

/// The API and a worker under a steady stream of events while the private PostgreSQL is
/// stopped twice: `pg_ctl stop -m fast` at 20% of the time for 20% of it, then `-m immediate`
/// (a crash: recovery from the WAL at start) at 60% for 15%. The worker polls only once a
/// minute, so picking up events after each outage depends on its LISTEN connection coming back.
pub(super) async fn postgres_restart(chaos: &Chaos, events: u64) -> Result<Row> {
    let stage = chaos
        .stage("postgres-restart", &[Destination::healthy(0)])
        .await?;
    let api_env = with_env(&[], &[("DISPATCH_DB_CONNECT_TIMEOUT_MS", "1000")]);
    let worker_env = with_env(
        &worker_base_env(),
        &[("DISPATCH_POLL_INTERVAL_MS", "60000")],
    );
    let launch = chaos.launch(&stage, &api_env, &worker_env);
    let mut services = vec![launch.api()?, launch.worker(1, MAX_IN_FLIGHT)?];
    chaos.ready(&mut services).await?;
    let api_ready = format!("{}/readyz", services[0].base_url);
    let worker_ready = format!("{}/readyz", services[1].base_url);

    let seconds = chaos.args.seconds;
    let per_sec = (events / seconds).max(1);
    let producer = chaos.producer(&stage, &services[0]);
    let started = Instant::now();
    let load = tokio::spawn({
        let producer = producer.clone();
        async move { producer.paced(per_sec, seconds, MAX_IN_FLIGHT).await }
    });
    let total = Duration::from_secs(seconds);
    let mut outages = Vec::new();
    for (mode, at, length) in [(StopMode::Fast, 0.2, 0.2), (StopMode::Immediate, 0.6, 0.15)] {
        tokio::time::sleep_until((started + total.mul_f64(at)).into()).await;
        let down_at = started.elapsed();
        tokio::task::block_in_place(|| chaos.pg.stop(mode))?;
        // A moment for the services to notice.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let api_ready_while_down = get_status(&chaos.client, &api_ready).await;
        let worker_ready_while_down = get_status(&chaos.client, &worker_ready).await;
        tokio::time::sleep_until((started + total.mul_f64(at + length)).into()).await;
        tokio::task::block_in_place(|| chaos.pg.start_again())?;
        let up_at = started.elapsed();
        let ready = wait_until(Duration::from_secs(30), || async {
            get_status(&chaos.client, &worker_ready).await == Some(StatusCode::OK)
        })
        .await;
        let worker_ready_after = ready.then(|| started.elapsed().saturating_sub(up_at));
        let listening = match admin::connect(&stage.database_url).await {
            Ok(mut conn) => queries::listening_backends(&mut conn).await.unwrap_or(-1),
            Err(_) => -1,
        };
        outages.push(Outage {
            mode,
            down_at,
            up_at,
            api_ready_while_down,
            worker_ready_while_down,
            worker_ready_after,
            listening,
        });
    }
    let sent = load.await??;
    let accepted = sent.accepted_ids(&producer);
    let expected = expected(&stage, &accepted);
    let drained = chaos
        .drain(&stage, expected, chaos.args.drain_within())
        .await;
    stop_all(services).await;

    let mut row = row(&stage, sent.sent());
    let mut json_outages = Vec::new();
    for o in &outages {
        let recovered = sent.first_accepted_after(o.up_at);
        let (refused, unanswered) = sent.failures_between(o.down_at, recovered.unwrap_or(o.up_at));
        let api_after = recovered.map(|r| r.saturating_sub(o.up_at));
        row.notes.push(format!(
            "{} stop {:.1}s: {refused} refused, {unanswered} unanswered; API /readyz {}, \
             worker /readyz {} while down; API accepting {} and worker listening {} after start",
            o.mode.name(),
            (o.up_at - o.down_at).as_secs_f64(),
            status_text(o.api_ready_while_down),
            status_text(o.worker_ready_while_down),
            secs_text(api_after),
            secs_text(o.worker_ready_after),
        ));
        if refused == 0 {
            row.failed_checks.push(format!(
                "no refusal seen during the {} outage",
                o.mode.name()
            ));
        }
        if api_after.is_none() {
            row.failed_checks.push(format!(
                "the API accepted nothing after the {} outage",
                o.mode.name()
            ));
        }
        if o.worker_ready_after.is_none() || o.listening < 1 {
            row.failed_checks.push(format!(
                "the worker's LISTEN connection did not come back after the {} outage",
                o.mode.name()
            ));
        }
        json_outages.push(json!({
            "mode": o.mode.name(),
            "down_at_secs": o.down_at.as_secs_f64(),
            "down_secs": (o.up_at - o.down_at).as_secs_f64(),
            "refused": refused,
            "unanswered": unanswered,
            "api_readyz_while_down": o.api_ready_while_down.map(|s| s.as_u16()),
            "worker_readyz_while_down": o.worker_ready_while_down.map(|s| s.as_u16()),
            "api_recovered_secs": api_after.map(|d| d.as_secs_f64()),
            "worker_ready_secs": o.worker_ready_after.map(|d| d.as_secs_f64()),
            "listening_backends": o.listening,
        }));
    }
    row.extra.insert("outages".to_owned(), json!(json_outages));
    row.extra.insert(
        "refused_by_status".to_owned(),
        json!(
            sent.refused()
                .iter()
                .map(|(s, n)| (s.to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>()
        ),
    );
    row.extra.insert("sends_late".to_owned(), json!(sent.late));
    if sent.refused().keys().any(|&s| s != 503) {
        row.failed_checks
            .push(format!("refusals other than 503: {:?}", sent.refused()));
    }
    if !drained {
        row.notes.push("did not drain in time".to_owned());
    }
    chaos.finish(&stage, &mut row, &accepted, started).await?;
    Ok(row)
}
