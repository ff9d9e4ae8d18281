//! Setting a chaos scenario's stage and clearing it: its database and subscriptions, launching
//! the services, waiting until they are ready, draining the queue, finishing the run.

use super::*;

impl Chaos {
    pub(super) fn database_name(&self, scenario: &str) -> String {
        format!(
            "{DB_PREFIX}{}_{}",
            std::process::id(),
            scenario.replace('-', "_")
        )
    }

    /// A fresh database with `destinations` subscribed (each to every event type).
    pub(super) async fn stage(
        &self,
        name: &'static str,
        destinations: &[Destination],
    ) -> Result<Stage> {
        self.stage_on(&self.pg.admin_url(), name, destinations)
            .await
    }

    /// [`Chaos::stage`] on the server `admin_url` names (a scenario's own cluster).
    pub(super) async fn stage_on(
        &self,
        admin_url: &str,
        name: &'static str,
        destinations: &[Destination],
    ) -> Result<Stage> {
        let db = self.database_name(name);
        let admin_url = admin_url.to_owned();
        let mut conn = admin::connect(&admin_url).await?;
        admin::drop_database(&mut conn, &db).await?;
        admin::create_database(&mut conn, &db, None)
            .await
            .with_context(|| format!("creating database {db}"))?;
        drop(conn);
        let database_url = url_with_database(&admin_url, &db);
        migrations::run_pending(&database_url)
            .await
            .with_context(|| format!("migrating {db}"))?;
        let receiver = Receiver::start().await?;
        let mut conn = admin::connect(&database_url).await?;
        let mut subscriptions = Vec::new();
        for (n, d) in (0u32..).zip(destinations) {
            let suffix = Receiver::faulty_suffix(d.fault, d.fail_permille, d.delay_ms);
            bench_queries::seed_subscriptions(
                &mut conn,
                &SubscriptionSeed {
                    id_prefix: "sub-",
                    url_prefix: &receiver.url_prefix(),
                    url_suffix: &suffix,
                    pattern: "*",
                    pattern_per_index: false,
                    first: i32::try_from(n)?,
                    count: 1,
                    secret: "chaos-secret",
                    // High enough that the limiter never holds a scenario back.
                    rate_limit_per_sec: 100_000.0,
                    rate_limit_burst: 100_000,
                },
            )
            .await?;
            subscriptions.push((format!("sub-{n}"), n));
        }
        Ok(Stage {
            name,
            database_url,
            receiver,
            subscriptions,
        })
    }

    /// Drops the scenario's database, and those of its phases (`<name>-<phase>`).
    pub(super) async fn drop_database(&self, name: &str) {
        let db = self.database_name(name);
        let dropped = async {
            let mut conn = admin::connect(&self.pg.admin_url()).await?;
            for each in admin::databases_with_prefix(&mut conn, &db).await? {
                admin::drop_database(&mut conn, &each).await?;
            }
            Ok::<_, dispatch_store::StoreError>(())
        }
        .await;
        if let Err(e) = dropped {
            eprintln!("chaos: could not drop database {db}: {e}");
        }
    }

    /// How the scenario's children are started: `worker_env` and `api_env` on top of the
    /// harness's own settings.
    pub(super) fn launch<'a>(
        &'a self,
        stage: &'a Stage,
        api_env: &'a [(String, String)],
        worker_env: &'a [(String, String)],
    ) -> Launch<'a> {
        Launch {
            binaries: &self.binaries,
            database_url: &stage.database_url,
            logs: &self.logs,
            label: stage.name,
            api_key: &self.api_key,
            api_env,
            worker_env,
        }
    }

    pub(super) fn producer(&self, stage: &Stage, api: &Service) -> Producer {
        Producer::new(
            self.client.clone(),
            format!("{}/events", api.base_url),
            self.api_key.clone(),
            format!("{}-", stage.name),
        )
    }

    pub(super) async fn ready(&self, services: &mut [Service]) -> Result<()> {
        processes::wait_ready(&self.client, services, READY_WITHIN).await
    }

    /// Waits until the database holds no queued delivery and the receiver has at least
    /// `expected` pairs (or `within` passed); then a moment more for late duplicates. Returns
    /// whether it drained.
    pub(super) async fn drain(&self, stage: &Stage, expected: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut last_report = Instant::now();
        loop {
            let queued = match admin::connect(&stage.database_url).await {
                Ok(mut conn) => bench_queries::delivery_tally(&mut conn)
                    .await
                    .ok()
                    .map(|t| t.pending + t.processing + t.retrying),
                Err(_) => None,
            };
            let got = stage.receiver.unique();
            if queued == Some(0) && got >= expected {
                tokio::time::sleep(SETTLE).await;
                return true;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "chaos:   gave up waiting: {got} of {expected} delivered, {queued:?} queued"
                );
                return false;
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                eprintln!("chaos:   … {got} of {expected} delivered, {queued:?} queued");
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The accounting of `accepted` after the scenario, and the figures every row carries.
    pub(super) async fn finish(
        &self,
        stage: &Stage,
        row: &mut Row,
        accepted: &[String],
        started: Instant,
    ) -> Result<()> {
        let mut conn = admin::connect(&stage.database_url).await?;
        let states = queries::delivery_states(&mut conn).await?;
        let by_failure = queries::attempts_by_failure(&mut conn).await?;
        drop(conn);
        row.accepted = accepted.len() as u64;
        row.accounting = report::account(
            accepted,
            &stage.subscriptions,
            &stage.receiver.deliveries(),
            &states,
        );
        row.elapsed_secs = started.elapsed().as_secs_f64();
        let attempts: Map<String, serde_json::Value> = by_failure
            .iter()
            .map(|f| {
                (
                    f.error_code.clone().unwrap_or_else(|| "ok".to_owned()),
                    json!(f.attempts),
                )
            })
            .collect();
        row.extra
            .insert("attempts_by_outcome".to_owned(), attempts.into());
        let r = stage.receiver.received();
        row.extra.insert(
            "receiver".to_owned(),
            json!({
                "answered_500": r.failed_answers,
                "hung": r.hung,
                "reset": r.reset,
                "trickled": r.trickled,
                "unreadable": r.unreadable,
            }),
        );
        if row.accounting.unacknowledged_delivered > 0 {
            row.notes.push(format!(
                "{} delivered although their POST was not answered 2xx (stored, the answer lost)",
                row.accounting.unacknowledged_delivered
            ));
        }
        Ok(())
    }
}
