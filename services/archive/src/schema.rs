//! The archive's schema: migrations embedded in the binary, applied at start, and checked.
//!
//! A small runner rather than refinery or sqlx: the migrations are a handful of SQL files, and
//! both crates bring their own driver features, configuration parsers and macros for what is
//! forty lines here. The rules:
//! - `archive_schema` records each applied migration with a SHA-256 of its text;
//! - a migration recorded with another checksum (edited after it shipped), or a version this
//!   build does not know (a newer archive migrated the database), refuses the start with a
//!   message saying what to do;
//! - missing migrations are applied in order, each in its own transaction, under an advisory
//!   lock so two archives starting together do not both apply them.

use tokio_postgres::Client;

/// (version, name, SQL), in order. Never edit a shipped one: add the next.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "archive", include_str!("../migrations/0001_archive.sql")),
    (2, "areas", include_str!("../migrations/0002_areas.sql")),
    (
        3,
        "query indexes",
        include_str!("../migrations/0003_query_indexes.sql"),
    ),
    (
        4,
        "outcomes",
        include_str!("../migrations/0004_outcomes.sql"),
    ),
    (5, "rollup", include_str!("../migrations/0005_rollup.sql")),
    (
        6,
        "rollup by community",
        include_str!("../migrations/0006_rollup_by_community.sql"),
    ),
    (
        7,
        "rollup pairs",
        include_str!("../migrations/0007_rollup_pairs.sql"),
    ),
    (
        8,
        "rollup pairs merge",
        include_str!("../migrations/0008_rollup_pairs_merge.sql"),
    ),
];

/// Arbitrary but fixed: the advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x6865_6c70_6772_6964;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database has archive schema version {found}, newer than this build knows ({known}): \
         run a helpgrid-archive at least as new as the one that migrated it"
    )]
    Newer { found: i32, known: i32 },
    #[error(
        "archive migration {version} ({name}) in the database differs from this build's \
         (checksum {found} vs {expected}): the schema was changed by hand or by another build; \
         restore it or use a fresh database"
    )]
    Mismatch {
        version: i32,
        name: String,
        found: String,
        expected: String,
    },
    #[error("cannot migrate the archive schema: {}", db_message(.0))]
    Database(#[from] tokio_postgres::Error),
}

/// PostgreSQL's own message (e.g. "relation \"incidents\" already exists") where there is one.
fn db_message(error: &tokio_postgres::Error) -> String {
    error
        .as_db_error()
        .map_or_else(|| error.to_string(), |db| db.message().to_owned())
}

pub fn checksum(sql: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, sql.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Applied migrations as (version, checksum), checked against `known`: pure, so the refusal
/// rules are unit-tested.
pub fn plan(
    applied: &[(i32, String, String)],
    known: &[(i32, &str, &str)],
) -> Result<Vec<i32>, SchemaError> {
    let newest_known = known.iter().map(|m| m.0).max().unwrap_or(0);
    if let Some(found) = applied
        .iter()
        .map(|a| a.0)
        .filter(|v| *v > newest_known)
        .max()
    {
        return Err(SchemaError::Newer {
            found,
            known: newest_known,
        });
    }
    for (version, name, sum) in applied {
        if let Some((_, _, sql)) = known.iter().find(|m| m.0 == *version) {
            let expected = checksum(sql);
            if *sum != expected {
                return Err(SchemaError::Mismatch {
                    version: *version,
                    name: name.clone(),
                    found: sum.clone(),
                    expected,
                });
            }
        }
    }
    Ok(known
        .iter()
        .map(|m| m.0)
        .filter(|v| !applied.iter().any(|a| a.0 == *v))
        .collect())
}

/// Brings the database to this build's schema, or says why it will not.
pub async fn migrate(client: &mut Client) -> Result<i32, SchemaError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS archive_schema (
                version integer PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let applied: Vec<(i32, String, String)> = tx
        .query("SELECT version, name, checksum FROM archive_schema", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let todo = plan(&applied, MIGRATIONS)?;
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| todo.contains(&m.0)) {
        tracing::info!(version, name, "applying archive migration");
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO archive_schema (version, name, checksum) VALUES ($1, $2, $3)",
            &[version, name, &checksum(sql)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[(i32, &str, &str)] = &[(1, "a", "CREATE 1"), (2, "b", "CREATE 2")];

    #[test]
    fn a_fresh_database_gets_every_migration_in_order() {
        assert_eq!(plan(&[], KNOWN).ok(), Some(vec![1, 2]));
        let one = vec![(1, "a".to_owned(), checksum("CREATE 1"))];
        assert_eq!(plan(&one, KNOWN).ok(), Some(vec![2]));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let newer = vec![(3, "c".to_owned(), checksum("x"))];
        let refused = plan(&newer, KNOWN).err().map(|e| e.to_string());
        assert!(refused.is_some_and(|m| m.contains("version 3, newer than this build knows (2)")));
    }

    #[test]
    fn an_edited_migration_is_refused() {
        let edited = vec![(1, "a".to_owned(), checksum("CREATE 1 -- edited"))];
        assert!(matches!(
            plan(&edited, KNOWN),
            Err(SchemaError::Mismatch { version: 1, .. })
        ));
    }
}
