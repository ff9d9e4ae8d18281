//! `dispatch-api admin tenants create | list | show | set-limits | delete`: tenants from the
//! shipped image, through the same store functions as `/tenants` (actor `cli` in the audit
//! log). A tenant's keys: `admin keys create --scope tenant:<id>` (or `:read`, `ingest:<id>`).

use clap::{Args, Subcommand};
use dispatch_domain::TenantId;
use dispatch_store::AsyncPgConnection;
use dispatch_store::queries::tenants::{self, Deleted, TenantLimits};

use super::keys::CLI_ACTOR;
use crate::routes::tenant_views::TenantView;

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant (its id is never reused).
    Create {
        /// 1–40 characters from [a-z0-9_-], starting with a letter or digit.
        #[arg(long, value_parser = super::parse::tenant_id)]
        id: TenantId,
        /// What it is (1–128 characters).
        #[arg(long, value_parser = parse_name)]
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List the live tenants as JSON lines.
    List,
    /// Print one tenant.
    Show {
        #[arg(value_parser = super::parse::tenant_id)]
        id: TenantId,
    },
    /// Replace a tenant's own limits (a limit not given: the configured default).
    SetLimits {
        #[arg(value_parser = super::parse::tenant_id)]
        id: TenantId,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Delete a tenant: its keys are revoked and its subscriptions deleted, in one transaction.
    Delete {
        #[arg(value_parser = super::parse::tenant_id)]
        id: TenantId,
    },
}

/// A tenant's own limits; each absent one is the configured default (`DISPATCH_TENANT_*`).
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Events per second it may ingest per API replica (above 0, at most 1000000).
    #[arg(long, value_parser = parse_rate)]
    ingest_rate_per_sec: Option<f64>,
    /// Events it may ingest at once above its rate (1 to 1000000).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1_000_000))]
    ingest_burst: Option<i32>,
    /// Live subscriptions it may have (0 to 1000000).
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=1_000_000))]
    max_subscriptions: Option<i32>,
    /// Largest event it may send, in bytes (1 to 67108864).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=64 << 20))]
    max_payload_bytes: Option<i32>,
}

impl LimitArgs {
    fn limits(&self) -> TenantLimits {
        TenantLimits {
            ingest_rate_per_sec: self.ingest_rate_per_sec,
            ingest_burst: self.ingest_burst,
            max_subscriptions: self.max_subscriptions,
            max_payload_bytes: self.max_payload_bytes,
        }
    }
}

fn parse_name(text: &str) -> Result<String, String> {
    crate::routes::keys::check_name(text).map(|()| text.to_owned())
}

fn parse_rate(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|r| *r > 0.0 && *r <= 1_000_000.0)
        .ok_or_else(|| format!("must be a number above 0 and at most 1000000, got {text:?}"))
}

fn shown(row: tenants::TenantRow) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&TenantView::from(row))?)
}

/// Runs `command`; returns what to print.
pub async fn run(conn: &mut AsyncPgConnection, command: TenantsCommand) -> anyhow::Result<String> {
    match command {
        TenantsCommand::Create { id, name, limits } => {
            let row = tenants::create(conn, CLI_ACTOR, &id, &name, &limits.limits())
                .await?
                .ok_or_else(|| anyhow::anyhow!("tenant id {id} is taken (ids are never reused)"))?;
            shown(row)
        }
        TenantsCommand::List => {
            let mut lines = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = tenants::list(conn, after.as_deref(), 250).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id.clone());
                for row in page {
                    lines.push(serde_json::to_string(&TenantView::from(row))?);
                }
            }
            Ok(lines.join("\n"))
        }
        TenantsCommand::Show { id } => shown(
            tenants::find(conn, &id)
                .await?
                .filter(|row| row.deleted_at.is_none())
                .ok_or_else(|| anyhow::anyhow!("no tenant {id}"))?,
        ),
        TenantsCommand::SetLimits { id, limits } => shown(
            tenants::set_limits(conn, CLI_ACTOR, &id, &limits.limits())
                .await?
                .ok_or_else(|| anyhow::anyhow!("no tenant {id}"))?,
        ),
        TenantsCommand::Delete { id } => match tenants::delete(conn, CLI_ACTOR, &id).await? {
            Deleted::Deleted {
                tenant,
                subscriptions,
                keys,
            } => Ok(format!(
                "deleted tenant {}: {subscriptions} subscriptions deleted, {keys} keys revoked",
                tenant.id
            )),
            Deleted::Default => anyhow::bail!("the default tenant cannot be deleted"),
            Deleted::NotFound => anyhow::bail!("no tenant {id}"),
        },
    }
}
