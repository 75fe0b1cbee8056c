//! The SQL, one code path over SQLite and PostgreSQL (sqlx's `Any` driver). Parameters are
//! numbered (`$1`), each used once and in order, which both databases read the same way.

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::record::{
    Cursor, Detail, FailureCount, Filter, Kind, Page, Run, Summary, Usage, UsageRow,
};
use crate::StoreError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const COLUMNS: &str = "id, created_ms, caller, surface, model, answered_by, kind, stream, \
    status, error_kind, latency_ms, first_token_ms, gateway_ms, prompt_tokens, \
    completion_tokens, cost_usd, saved_tokens";

/// Readers do not wait on the writer; a commit is durable without a sync per batch. Set on every
/// connection the pool opens (`synchronous` is per connection, and the pool replaces idle ones).
const SQLITE_PRAGMAS: [&str; 2] = ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"];

/// Connects and brings the schema up to date (the readers' pool, opened first).
pub async fn open(url: &str) -> Result<AnyPool, StoreError> {
    let pool = connect(url).await?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| StoreError::Migrate(e.to_string()))?;
    Ok(pool)
}

/// Connects to a database whose schema `open` brought up to date (the writer's pool). A SQLite
/// file (and its folder) is created.
pub async fn connect(url: &str) -> Result<AnyPool, StoreError> {
    sqlx::any::install_default_drivers();
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Err(StoreError::Connect(
            "an in-memory SQLite database cannot be shared by the writer and the readers, which \
             have connections of their own: give a file (sqlite://PATH)"
                .into(),
        ));
    }
    let url = sqlite_create(url)?;
    let sqlite = url.starts_with("sqlite:");
    AnyPoolOptions::new()
        .max_connections(if sqlite { 1 } else { 4 })
        .acquire_timeout(std::time::Duration::from_secs(5))
        .after_connect(move |connection, _| {
            Box::pin(async move {
                if sqlite {
                    for pragma in SQLITE_PRAGMAS {
                        sqlx::query(pragma).execute(&mut *connection).await?;
                    }
                }
                Ok(())
            })
        })
        .connect(&url)
        .await
        .map_err(|e| StoreError::Connect(e.to_string()))
}

/// A SQLite URL with `mode=rwc` (create the file), its folder made.
fn sqlite_create(url: &str) -> Result<String, StoreError> {
    let Some(path) = url.strip_prefix("sqlite://") else {
        return Ok(url.to_string());
    };
    let file = path.split('?').next().unwrap_or(path);
    if let Some(folder) = std::path::Path::new(file).parent() {
        if !folder.as_os_str().is_empty() {
            std::fs::create_dir_all(folder)
                .map_err(|e| StoreError::Connect(format!("{}: {e}", folder.display())))?;
        }
    }
    Ok(if path.contains("mode=") {
        url.to_string()
    } else if path.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

/// Writes `runs` in one transaction; a row already there (a retried batch) is left as it is.
pub async fn insert(pool: &AnyPool, runs: &[Run]) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for run in runs {
        let s = &run.summary;
        let detail =
            serde_json::to_string(&run.detail).map_err(|e| StoreError::Encode(e.to_string()))?;
        sqlx::query(
            "INSERT INTO runs (id, created_ms, caller, surface, model, answered_by, kind, \
             stream, status, error_kind, latency_ms, first_token_ms, gateway_ms, prompt_tokens, \
             completion_tokens, cost_usd, saved_tokens, detail) VALUES ($1, $2, $3, $4, $5, $6, \
             $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&s.id)
        .bind(s.created_ms)
        .bind(s.caller.as_deref())
        .bind(s.surface.as_ref())
        .bind(&s.model)
        .bind(s.answered_by.as_deref())
        .bind(s.kind.as_str())
        .bind(i64::from(s.stream))
        .bind(i64::from(s.status))
        .bind(s.error_kind.as_deref())
        .bind(as_i64(s.latency_ms))
        .bind(s.first_token_ms.map(as_i64))
        .bind(s.gateway_ms)
        .bind(as_i64(s.prompt_tokens))
        .bind(as_i64(s.completion_tokens))
        .bind(s.cost_usd)
        .bind(as_i64(s.saved_tokens))
        .bind(detail)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes rows older than `before_ms`; how many.
pub async fn prune(pool: &AnyPool, before_ms: i64) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM runs WHERE created_ms < $1")
        .bind(before_ms)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

pub async fn get(pool: &AnyPool, id: &str) -> Result<Option<Run>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS}, detail FROM runs WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let detail: String = row.try_get("detail")?;
    Ok(Some(Run {
        summary: summary(&row)?,
        detail: serde_json::from_str::<Detail>(&detail)
            .map_err(|e| StoreError::Encode(e.to_string()))?,
    }))
}

/// A WHERE clause being built: each condition names its parameters as it binds their values, so
/// the `$n` and the values cannot drift apart.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    values: Vec<Bound>,
}

enum Bound {
    Text(String),
    Int(i64),
}

impl Conditions {
    /// The next parameter (`$n`), bound to `value`.
    fn param(&mut self, value: Bound) -> String {
        self.values.push(value);
        format!("${}", self.values.len())
    }
}

/// A page of runs, newest first.
pub async fn list(pool: &AnyPool, filter: &Filter) -> Result<Page, StoreError> {
    let mut w = Conditions::default();
    if let Some(model) = &filter.model {
        let p = w.param(Bound::Text(model.clone()));
        w.clauses.push(format!("model = {p}"));
    }
    if let Some(status) = filter.status {
        let p = w.param(Bound::Int(i64::from(status)));
        w.clauses.push(format!("status = {p}"));
    }
    if let Some(caller) = &filter.caller {
        let p = w.param(Bound::Text(caller.clone()));
        w.clauses.push(format!("caller = {p}"));
    }
    if let Some(since) = filter.since_ms {
        let p = w.param(Bound::Int(since));
        w.clauses.push(format!("created_ms >= {p}"));
    }
    if let Some(until) = filter.until_ms {
        let p = w.param(Bound::Int(until));
        w.clauses.push(format!("created_ms < {p}"));
    }
    if let Some(cursor) = &filter.cursor {
        // Each parameter once: the cursor's time is bound twice.
        let a = w.param(Bound::Int(cursor.created_ms));
        let b = w.param(Bound::Int(cursor.created_ms));
        let c = w.param(Bound::Text(cursor.id.clone()));
        w.clauses.push(format!(
            "(created_ms < {a} OR (created_ms = {b} AND id < {c}))"
        ));
    }
    let limit = w.param(Bound::Int(i64::from(filter.limit) + 1));
    let sql = format!(
        "SELECT {COLUMNS} FROM runs {} ORDER BY created_ms DESC, id DESC LIMIT {limit}",
        if w.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", w.clauses.join(" AND "))
        }
    );
    let mut query = sqlx::query(&sql);
    for value in w.values {
        query = match value {
            Bound::Text(text) => query.bind(text),
            Bound::Int(n) => query.bind(n),
        };
    }
    // One more than asked (the limit above): whether there is a next page.
    let rows = query.fetch_all(pool).await?;
    let mut data = rows.iter().map(summary).collect::<Result<Vec<_>, _>>()?;
    let more = data.len() > filter.limit as usize;
    data.truncate(filter.limit as usize);
    let next_cursor = more.then(|| data.last()).flatten().map(|last| {
        Cursor {
            created_ms: last.created_ms,
            id: last.id.clone(),
        }
        .encode()
    });
    Ok(Page { data, next_cursor })
}

const DAY_MS: i64 = 86_400_000;

/// Sums per day, model and kind, and failures per reason, over `[since_ms, until_ms)`. Sums are
/// cast back to BIGINT: PostgreSQL sums BIGINT into NUMERIC.
pub async fn usage(pool: &AnyPool, since_ms: i64, until_ms: i64) -> Result<Usage, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT created_ms / {DAY_MS} AS day, model, kind, COUNT(*) AS requests, \
         CAST(SUM(CASE WHEN status >= 400 OR error_kind IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT) \
         AS failed, CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, \
         CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, \
         SUM(cost_usd) AS cost_usd, CAST(SUM(saved_tokens) AS BIGINT) AS saved_tokens \
         FROM runs WHERE created_ms >= $1 AND created_ms < $2 \
         GROUP BY created_ms / {DAY_MS}, model, kind ORDER BY day, model, kind"
    ))
    .bind(since_ms)
    .bind(until_ms)
    .fetch_all(pool)
    .await?;
    let failures = sqlx::query(
        "SELECT error_kind, COUNT(*) AS count FROM runs \
         WHERE error_kind IS NOT NULL AND created_ms >= $1 AND created_ms < $2 \
         GROUP BY error_kind ORDER BY count DESC, error_kind",
    )
    .bind(since_ms)
    .bind(until_ms)
    .fetch_all(pool)
    .await?;
    Ok(Usage {
        rows: rows.iter().map(usage_row).collect::<Result<_, _>>()?,
        failures: failures
            .iter()
            .map(|row| {
                Ok(FailureCount {
                    reason: row.try_get("error_kind")?,
                    count: as_u64(row.try_get::<i64, _>("count")?),
                })
            })
            .collect::<Result<_, StoreError>>()?,
    })
}

fn usage_row(row: &AnyRow) -> Result<UsageRow, StoreError> {
    let int = |name: &str| -> Result<u64, StoreError> { Ok(as_u64(row.try_get::<i64, _>(name)?)) };
    Ok(UsageRow {
        day: row.try_get("day")?,
        model: row.try_get("model")?,
        kind: Kind::parse(row.try_get::<String, _>("kind")?.as_str()),
        requests: int("requests")?,
        failed: int("failed")?,
        prompt_tokens: int("prompt_tokens")?,
        completion_tokens: int("completion_tokens")?,
        cost_usd: row.try_get::<Option<f64>, _>("cost_usd")?.unwrap_or(0.0),
        saved_tokens: int("saved_tokens")?,
    })
}

fn summary(row: &AnyRow) -> Result<Summary, StoreError> {
    let int = |name: &str| -> Result<i64, StoreError> { Ok(row.try_get::<i64, _>(name)?) };
    let opt_int = |name: &str| -> Result<Option<i64>, StoreError> {
        Ok(row.try_get::<Option<i64>, _>(name)?)
    };
    Ok(Summary {
        id: row.try_get("id")?,
        created_ms: int("created_ms")?,
        caller: row.try_get("caller")?,
        surface: row.try_get::<String, _>("surface")?.into(),
        model: row.try_get("model")?,
        answered_by: row.try_get("answered_by")?,
        kind: Kind::parse(row.try_get::<String, _>("kind")?.as_str()),
        stream: int("stream")? != 0,
        status: u16::try_from(int("status")?).unwrap_or_default(),
        error_kind: row.try_get("error_kind")?,
        latency_ms: as_u64(int("latency_ms")?),
        first_token_ms: opt_int("first_token_ms")?.map(as_u64),
        gateway_ms: row.try_get("gateway_ms")?,
        prompt_tokens: as_u64(int("prompt_tokens")?),
        completion_tokens: as_u64(int("completion_tokens")?),
        cost_usd: row.try_get("cost_usd")?,
        saved_tokens: as_u64(int("saved_tokens")?),
    })
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn as_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    /// The pool replaces connections (idle ones time out); each new one must get the pragmas,
    /// not only the first.
    #[tokio::test]
    async fn every_sqlite_connection_gets_the_pragmas() {
        let dir = std::env::temp_dir().join(format!("quorate-db-pragmas-{}", std::process::id()));
        let pool = super::open(&format!("sqlite://{}", dir.join("runs.db").display()))
            .await
            .unwrap();
        for connection in ["first", "replacement"] {
            let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(synchronous, 1, "NORMAL on the {connection} connection");
            // Taken out of the pool and closed: the next query opens another.
            pool.acquire().await.unwrap().detach();
        }
        pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
