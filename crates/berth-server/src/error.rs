//! Errors of the server library. Messages are lowercase and read well after "failed to …".

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("failed to open the database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("failed to apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("failed to create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("failed to connect to the Docker daemon: {0}")]
    Engine(#[from] berth_engine::EngineError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("no token named or numbered `{0}`")]
    NoSuchToken(String),
    #[error("tls: {0}")]
    Tls(String),
}
