//! The three database products: URLs, identifier quoting and the SQL types each maps to.

use std::fmt;

use super::cell::ColumnType;

/// A database product SqlCopy reads from or writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Postgres => "PostgreSQL",
            Self::MySql => "MySQL/MariaDB",
            Self::Sqlite => "SQLite",
        })
    }
}

impl Backend {
    /// The backend of a URL and the URL as the driver takes it (`mariadb://` becomes `mysql://`).
    pub(crate) fn from_url(url: &str) -> Result<(Self, String), String> {
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .or_else(|| url.split_once(':'))
            .ok_or_else(|| "not a database URL (postgres://…, mysql://…, sqlite://…)".to_owned())?;
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok((Self::Postgres, url.to_owned())),
            "mysql" | "mariadb" => Ok((Self::MySql, format!("mysql://{rest}"))),
            "sqlite" => Ok((Self::Sqlite, url.to_owned())),
            other => Err(format!(
                "unsupported database `{other}` (postgres, mysql, mariadb or sqlite)"
            )),
        }
    }

    /// Quotes a plain identifier (checked by the settings, so it holds no quote).
    pub(crate) fn quote(self, name: &str) -> String {
        match self {
            Self::MySql => format!("`{name}`"),
            Self::Postgres | Self::Sqlite => format!("\"{name}\""),
        }
    }

    /// The placeholder for the `n`th (1-based) parameter.
    pub(crate) fn placeholder(self, n: usize) -> String {
        match self {
            Self::Postgres => format!("${n}"),
            Self::MySql | Self::Sqlite => "?".to_owned(),
        }
    }

    /// The most parameters one statement is given (below every backend's limit).
    pub(crate) fn max_parameters(self) -> usize {
        match self {
            Self::Postgres | Self::MySql => 60_000,
            Self::Sqlite => 30_000,
        }
    }

    /// The column type `create_table` uses. A MySQL key column cannot be an unbounded TEXT or BLOB.
    pub(crate) fn column_type(self, column: ColumnType, in_key: bool) -> &'static str {
        use ColumnType as T;
        match self {
            Self::Postgres => match column {
                T::Bool => "BOOLEAN",
                T::I64 => "BIGINT",
                T::F64 => "DOUBLE PRECISION",
                T::Decimal => "NUMERIC",
                T::Text => "TEXT",
                T::Bytes => "BYTEA",
                T::Json => "JSONB",
                T::Date => "DATE",
                T::Timestamp => "TIMESTAMP",
                T::TimestampTz => "TIMESTAMPTZ",
            },
            Self::MySql => match column {
                T::Bool => "BOOLEAN",
                T::I64 => "BIGINT",
                T::F64 => "DOUBLE",
                T::Decimal => "DECIMAL(65,30)",
                T::Text if in_key => "VARCHAR(255)",
                T::Text => "LONGTEXT",
                T::Bytes if in_key => "VARBINARY(255)",
                T::Bytes => "LONGBLOB",
                T::Json => "JSON",
                T::Date => "DATE",
                T::Timestamp => "DATETIME(6)",
                // Without NULL DEFAULT NULL, older servers make the first TIMESTAMP column NOT NULL and
                // auto-updated.
                T::TimestampTz => "TIMESTAMP(6) NULL DEFAULT NULL",
            },
            // SQLite has affinities, not types. Exact decimals and JSON get a TEXT affinity (the name holds
            // TEXT) so that SQLite does not turn them into floats; the name still says what they are.
            Self::Sqlite => match column {
                T::Bool => "BOOLEAN",
                T::I64 => "INTEGER",
                T::F64 => "REAL",
                T::Decimal => "DECIMAL_TEXT",
                T::Text => "TEXT",
                T::Bytes => "BLOB",
                T::Json => "JSON_TEXT",
                T::Date => "DATE",
                T::Timestamp => "TIMESTAMP",
                T::TimestampTz => "TIMESTAMPTZ",
            },
        }
    }

    /// The logical type of a column of this backend, from the type name its driver reports (for SQLite,
    /// the declared type). `None` when SqlCopy cannot carry it.
    pub(crate) fn map_type(self, name: &str) -> Option<ColumnType> {
        use ColumnType as T;
        let lower = name.trim().to_ascii_lowercase();
        let n = lower.as_str();
        match self {
            Self::Postgres => Some(match n {
                "bool" => T::Bool,
                "int2" | "int4" | "int8" => T::I64,
                "float4" | "float8" => T::F64,
                "numeric" => T::Decimal,
                "text" | "varchar" | "bpchar" | "char" | "name" | "citext" => T::Text,
                "bytea" => T::Bytes,
                "json" | "jsonb" => T::Json,
                "date" => T::Date,
                "timestamp" => T::Timestamp,
                "timestamptz" => T::TimestampTz,
                _ => return None,
            }),
            Self::MySql => Some(match n {
                "boolean" => T::Bool,
                "tinyint" | "smallint" | "mediumint" | "int" | "bigint" | "tinyint unsigned"
                | "smallint unsigned" | "mediumint unsigned" | "int unsigned" | "bigint unsigned" => T::I64,
                "float" | "double" => T::F64,
                "decimal" => T::Decimal,
                "char" | "varchar" | "text" | "tinytext" | "mediumtext" | "longtext" | "enum" | "set" => {
                    T::Text
                }
                "binary" | "varbinary" | "blob" | "tinyblob" | "mediumblob" | "longblob" => T::Bytes,
                "json" => T::Json,
                "date" => T::Date,
                "datetime" => T::Timestamp,
                "timestamp" => T::TimestampTz,
                _ => return None,
            }),
            Self::Sqlite => sqlite_affinity(n),
        }
    }
}

/// A SQLite declared type (lowercase) as a logical type: the names `create_table` writes and the usual
/// ones, then SQLite's own affinity rules.
fn sqlite_affinity(n: &str) -> Option<ColumnType> {
    use ColumnType as T;
    let base = n.split('(').next().unwrap_or(n).trim();
    Some(match base {
        "bool" | "boolean" => T::Bool,
        "date" => T::Date,
        "datetime" | "timestamp" | "timestamp without time zone" => T::Timestamp,
        "timestamptz" | "timestamp with time zone" | "datetimetz" => T::TimestampTz,
        "json" | "jsonb" | "json_text" => T::Json,
        "decimal" | "numeric" | "decimal_text" | "numeric_text" => T::Decimal,
        // An expression's column has no declared type; the driver then reports the value's storage class.
        "null" => T::Text,
        _ if base.contains("int") => T::I64,
        _ if base.contains("char") || base.contains("clob") || base.contains("text") => T::Text,
        _ if base.contains("blob") => T::Bytes,
        _ if base.contains("real") || base.contains("floa") || base.contains("doub") => T::F64,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(
            Backend::from_url("mariadb://u@h/db"),
            Ok((Backend::MySql, "mysql://u@h/db".to_owned()))
        );
        assert_eq!(
            Backend::from_url("sqlite://x.db").map(|b| b.0),
            Ok(Backend::Sqlite)
        );
        assert!(Backend::from_url("oracle://x").is_err());
        assert!(Backend::from_url("nothing").is_err());
    }

    #[test]
    fn sqlite_types_map_by_declared_name() {
        assert_eq!(
            Backend::Sqlite.map_type("DECIMAL_TEXT"),
            Some(ColumnType::Decimal)
        );
        assert_eq!(
            Backend::Sqlite.map_type("NUMERIC(20, 6)"),
            Some(ColumnType::Decimal)
        );
        assert_eq!(Backend::Sqlite.map_type("VARCHAR(20)"), Some(ColumnType::Text));
        assert_eq!(
            Backend::Sqlite.map_type("TIMESTAMPTZ"),
            Some(ColumnType::TimestampTz)
        );
        assert_eq!(Backend::Sqlite.map_type("TIME"), None);
    }
}
