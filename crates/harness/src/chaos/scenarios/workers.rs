//! The process scenarios: SIGTERM with deliveries in flight, and three workers sharing one queue.

use super::*;

/// A rolling restart under a steady stream of events: worker-1 runs; at a third of the time
/// worker-2 starts and worker-1 gets SIGTERM; half way the API is replaced the same way (the
/// producer moves to a second API, the first gets SIGTERM with requests in flight); at two
/// thirds worker-3 starts and worker-2 gets SIGTERM. Every receiver request takes 100 ms, so
/// each worker's SIGTERM lands with deliveries in flight: they must finish and be recorded (or
/// be handed back) — never sent twice — and each process must exit 0 by itself.
pub(super) async fn sigterm(chaos: &Chaos, events: u64) -> Result<Row> {
    let stage = chaos.stage("sigterm", &[Destination::healthy(100)]).await?;
    let api_env = Vec::new();
    let worker_env = worker_base_env();
    let launch = chaos.launch(&stage, &api_env, &worker_env);
    let mut api = launch.api()?;
    let mut current = launch.worker(1, MAX_IN_FLIGHT)?;
    chaos.ready(std::slice::from_mut(&mut api)).await?;
    chaos.ready(std::slice::from_mut(&mut current)).await?;

    let seconds = chaos.args.seconds;
    let per_sec = (events / seconds).max(1);
    let producer = chaos.producer(&stage, &api);
    let started = Instant::now();
    let load = tokio::spawn({
        let producer = producer.clone();
        async move { producer.paced(per_sec, seconds, MAX_IN_FLIGHT).await }
    });
    let total = Duration::from_secs(seconds);
    let mut stops = Vec::new();
    let mut api_stop = None;
    for (next, at) in [(2, 1.0 / 3.0), (3, 2.0 / 3.0)] {
        tokio::time::sleep_until((started + total.mul_f64(at)).into()).await;
        let mut successor = launch.worker(next, MAX_IN_FLIGHT)?;
        chaos.ready(std::slice::from_mut(&mut successor)).await?;
        let in_flight = processing(&stage).await;
        let asked = Instant::now();
        let status = current.terminate(DRAIN_LIMIT).await;
        stops.push((current.name.clone(), in_flight, status, asked.elapsed()));
        current = successor;
        if next == 2 {
            // Half way: the API too, handing the producer over to a second one first.
            tokio::time::sleep_until((started + total.mul_f64(0.5)).into()).await;
            let mut successor = launch.api_named("api-2")?;
            chaos.ready(std::slice::from_mut(&mut successor)).await?;
            producer.retarget(format!("{}/events", successor.base_url));
            let asked = Instant::now();
            let status = api.terminate(DRAIN_LIMIT).await;
            api_stop = Some((api.name.clone(), status, asked.elapsed()));
            api = successor;
        }
    }
    let sent = load.await??;
    let accepted = sent.accepted_ids(&producer);
    let drained = chaos
        .drain(
            &stage,
            expected(&stage, &accepted),
            chaos.args.drain_within(),
        )
        .await;
    let asked = Instant::now();
    let last = current.terminate(DRAIN_LIMIT).await;
    stops.push((current.name.clone(), 0, last, asked.elapsed()));
    api.stop().await;

    let mut row = row(&stage, sent.sent());
    note_refusals(&mut row, &sent);
    let mut said = Vec::new();
    for (name, in_flight, status, took) in &stops {
        let exit = exit_text(*status);
        said.push(format!(
            "{name} {exit} in {:.1}s ({in_flight} processing at the signal)",
            took.as_secs_f64()
        ));
        if !status.is_some_and(|s| s.success()) {
            row.failed_checks
                .push(format!("{name} did not exit 0 after SIGTERM ({exit})"));
        }
    }
    if let Some((name, status, took)) = api_stop {
        let exit = exit_text(status);
        said.push(format!("{name} {exit} in {:.1}s", took.as_secs_f64()));
        if !status.is_some_and(|s| s.success()) {
            row.failed_checks
                .push(format!("{name} did not exit 0 after SIGTERM ({exit})"));
        }
    }
    row.notes.push(said.join(", "));
    if stops
        .iter()
        .take(2)
        .all(|(_, in_flight, _, _)| *in_flight <= 0)
    {
        row.failed_checks
            .push("no delivery was in flight at either SIGTERM".to_owned());
    }
    if !drained {
        row.notes.push("did not drain in time".to_owned());
    }
    chaos.finish(&stage, &mut row, &accepted, started).await?;
    Ok(row)
}

/// A backlog (ingested through the API with no worker running) to four subscriptions, then
/// three workers started together on it: with no crash, every delivery is claimed once, sent
/// once, and recorded with exactly one attempt.
pub(super) async fn three_workers(chaos: &Chaos, events: u64) -> Result<Row> {
    let stage = chaos
        .stage("three-workers", &[Destination::healthy(2); 4])
        .await?;
    let api_env = Vec::new();
    let worker_env = worker_base_env();
    let launch = chaos.launch(&stage, &api_env, &worker_env);
    let Ingested {
        api,
        sent,
        accepted,
        started,
    } = ingest(chaos, &stage, &launch, events).await?;
    let mut workers = Vec::new();
    for i in 1..=3 {
        workers.push(launch.worker(i, MAX_IN_FLIGHT)?);
    }
    chaos.ready(&mut workers).await?;
    let drained = chaos
        .drain(
            &stage,
            expected(&stage, &accepted),
            chaos.args.drain_within(),
        )
        .await;
    workers.push(api);
    stop_all(workers).await;

    let mut row = row(&stage, sent.sent());
    note_refusals(&mut row, &sent);
    if !drained {
        row.notes.push("did not drain in time".to_owned());
    }
    let mut conn = admin::connect(&stage.database_url).await?;
    let states = queries::delivery_states(&mut conn).await?;
    drop(conn);
    let not_once = states
        .iter()
        .filter(|s| s.attempts != 1 || s.recorded_attempts != 1)
        .count();
    row.notes.push(format!(
        "{} deliveries, {not_once} with other than one attempt",
        states.len()
    ));
    if not_once > 0 {
        row.failed_checks.push(format!(
            "{not_once} deliveries were attempted other than exactly once"
        ));
    }
    chaos.finish(&stage, &mut row, &accepted, started).await?;
    Ok(row)
}
