//! SQL text queries that each connection prepares once. Diesel's `sql_query` marks every query
//! unsafe to cache, so each execution parsed, described and planned the statement again: two
//! round trips (and two transactions) per statement. [`prepared`] keeps the statement in
//! diesel's per-connection cache, keyed by its text and bind types, so the next execution is
//! one round trip with a plan PostgreSQL may reuse.

use std::marker::PhantomData;

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};

/// A statement given as SQL text, with `$1`, `$2`… placeholders bound in order by
/// [`Prepared::bind`]; results are read with `QueryableByName`, as from `sql_query`.
#[derive(Debug, Clone)]
pub struct Prepared {
    sql: String,
}

/// The statement `sql`, to be prepared once per connection.
pub fn prepared(sql: impl Into<String>) -> Prepared {
    Prepared { sql: sql.into() }
}

impl Prepared {
    /// Binds the next placeholder.
    pub fn bind<ST, V>(self, value: V) -> Bound<Self, V, ST> {
        Bound::new(self, value)
    }
}

impl QueryId for Prepared {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Pg> for Prepared {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(&self.sql);
        Ok(())
    }
}

impl Query for Prepared {
    type SqlType = Untyped;
}

/// A [`Prepared`] statement with its placeholders bound so far.
#[derive(Debug, Clone)]
pub struct Bound<Q, V, ST> {
    query: Q,
    value: V,
    _marker: PhantomData<ST>,
}

impl<Q, V, ST> Bound<Q, V, ST> {
    fn new(query: Q, value: V) -> Self {
        Self {
            query,
            value,
            _marker: PhantomData,
        }
    }

    /// Binds the next placeholder.
    pub fn bind<ST2, V2>(self, value: V2) -> Bound<Self, V2, ST2> {
        Bound::new(self, value)
    }
}

impl<Q, V, ST> QueryId for Bound<Q, V, ST> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q, V, ST> QueryFragment<Pg> for Bound<Q, V, ST>
where
    Pg: HasSqlType<ST>,
    Q: QueryFragment<Pg>,
    V: ToSql<ST, Pg>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.query.walk_ast(out.reborrow())?;
        // The placeholder is already in the SQL text: bind the value without writing one.
        out.push_bind_param_value_only::<ST, V>(&self.value)
    }
}

impl<Q, V, ST> Query for Bound<Q, V, ST> {
    type SqlType = Untyped;
}
