//! `dispatch-api admin keys create | list | revoke | rotate`: the database's API keys from the
//! shipped image, through the same functions as `/keys` (actor `cli` in the audit log). A way
//! in when no admin key exists yet.

use clap::Subcommand;
use dispatch_domain::api_key::{ApiKeyId, Scope};
use dispatch_store::AsyncPgConnection;
use dispatch_store::queries::api_keys;

use crate::routes::key_views::{CreatedKeyView, KeyView};
use crate::routes::keys::{self as key_routes, DEFAULT_KEY_OVERLAP, MAX_KEY_OVERLAP_SECS};

/// Who `dispatch-api admin` is, in the audit log.
pub const CLI_ACTOR: &str = "cli";

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (shown once; only its SHA-256 is stored).
    Create {
        /// What the key is for (1–128 characters).
        #[arg(long, value_parser = parse_name)]
        name: String,
        /// admin, read, tenant:ID, tenant:ID:read or ingest:ID (ID: a tenant id).
        #[arg(long, value_parser = parse_scope)]
        scope: Scope,
        /// When it stops working (RFC 3339, in the future).
        #[arg(long, value_name = "RFC3339", value_parser = key_routes::check_expiry)]
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// List every key (never the keys themselves) as JSON lines.
    List,
    /// Revoke a key: it stops working on every API replica within about a second.
    Revoke {
        #[arg(value_parser = parse_id)]
        id: ApiKeyId,
    },
    /// Replace a key with a new one (printed once); the old one works for --overlap-secs more.
    Rotate {
        #[arg(value_parser = parse_id)]
        id: ApiKeyId,
        /// 0 to 2592000 (default 86400: a day).
        #[arg(long, value_parser = clap::value_parser!(u64).range(0..=MAX_KEY_OVERLAP_SECS))]
        overlap_secs: Option<u64>,
    },
}

fn parse_name(text: &str) -> Result<String, String> {
    key_routes::check_name(text).map(|()| text.to_owned())
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    text.parse()
        .map_err(|e: dispatch_domain::ParseError| e.to_string())
}

fn parse_id(text: &str) -> Result<ApiKeyId, String> {
    ApiKeyId::parse(text).map_err(|e| e.to_string())
}

fn created(row: api_keys::ApiKeyRow, key: String) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(&CreatedKeyView {
        view: row.into(),
        key,
    })?)
}

/// Runs `command`; returns what to print.
pub async fn run(conn: &mut AsyncPgConnection, command: KeysCommand) -> anyhow::Result<String> {
    let failed = |e: crate::error::ApiError| anyhow::anyhow!("{e}");
    match command {
        KeysCommand::Create {
            name,
            scope,
            expires_at,
        } => {
            if let Some(tenant) = scope.tenant()
                && dispatch_store::queries::tenants::find(conn, tenant)
                    .await?
                    .is_none_or(|t| t.deleted_at.is_some())
            {
                anyhow::bail!("--scope {scope}: there is no tenant {tenant}");
            }
            let (row, key) = key_routes::issue(conn, CLI_ACTOR, &name, &scope, expires_at)
                .await
                .map_err(failed)?;
            created(row, key)
        }
        KeysCommand::List => {
            let mut lines = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = api_keys::list(conn, None, after.as_deref(), 250).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id.clone());
                for row in page {
                    lines.push(serde_json::to_string(&KeyView::from(row))?);
                }
            }
            Ok(lines.join("\n"))
        }
        KeysCommand::Revoke { id } => {
            let row = api_keys::revoke(conn, CLI_ACTOR, id.as_str())
                .await?
                .ok_or_else(|| anyhow::anyhow!("no API key with id {id}"))?;
            Ok(serde_json::to_string_pretty(&KeyView::from(row))?)
        }
        KeysCommand::Rotate { id, overlap_secs } => {
            let overlap = overlap_secs.map_or(DEFAULT_KEY_OVERLAP, std::time::Duration::from_secs);
            let (row, key) = key_routes::rotate(conn, CLI_ACTOR, &id, overlap)
                .await
                .map_err(failed)?
                .ok_or_else(|| anyhow::anyhow!("no API key with id {id}"))?;
            created(row, key)
        }
    }
}
