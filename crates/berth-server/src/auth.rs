//! API tokens: random secrets shown once; only their SHA-256 is stored. The admin token is made
//! on the first start. Every `/api` call (except the OpenAPI document) needs
//! `Authorization: Bearer <token>`; a revoked token is refused at once.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{Row, SqlitePool};

use crate::ServerError;
use crate::db::now_ms;

/// Who made a request: the name of the token it carried.
#[derive(Debug, Clone)]
pub struct Caller(pub String);

#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates a token; returns its id and its secret (the only time the secret exists in clear).
pub async fn create(pool: &SqlitePool, name: &str) -> Result<(i64, String), ServerError> {
    let secret = format!("berth_{}", random_hex(24)?);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO tokens (name, hash, created_at) VALUES (?, ?, ?) RETURNING id",
    )
    .bind(name)
    .bind(hash(&secret))
    .bind(now_ms())
    .fetch_one(pool)
    .await?;
    Ok((id, secret))
}

pub async fn list(pool: &SqlitePool) -> Result<Vec<TokenInfo>, ServerError> {
    let rows = sqlx::query("SELECT id, name, created_at, revoked_at FROM tokens ORDER BY id")
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| TokenInfo {
            id: r.get("id"),
            name: r.get("name"),
            created_at: r.get("created_at"),
            revoked_at: r.get("revoked_at"),
        })
        .collect())
}

/// Revokes the tokens named `which`, or the one with that id. Returns how many were revoked.
pub async fn revoke(pool: &SqlitePool, which: &str) -> Result<u64, ServerError> {
    let id: Option<i64> = which.parse().ok();
    let done = sqlx::query(
        "UPDATE tokens SET revoked_at = ?3 WHERE revoked_at IS NULL AND (name = ?1 OR id = ?2)",
    )
    .bind(which)
    .bind(id)
    .bind(now_ms())
    .execute(pool)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(ServerError::NoSuchToken(which.to_string()));
    }
    Ok(done)
}

/// On the very first start, creates the `admin` token and returns its secret to print once.
pub async fn ensure_admin(pool: &SqlitePool) -> Result<Option<String>, ServerError> {
    let inserted = sqlx::query(
        "INSERT INTO meta (key, value) VALUES ('admin_token_created', '1') ON CONFLICT DO NOTHING",
    )
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(None);
    }
    Ok(Some(create(pool, "admin").await?.1))
}

/// The name of the live token with this secret.
pub async fn verify(pool: &SqlitePool, secret: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM tokens WHERE hash = ? AND revoked_at IS NULL")
        .bind(hash(secret))
        .fetch_optional(pool)
        .await
}

/// Middleware: refuses requests without a live bearer token (401), records the caller.
pub async fn require_token(
    State(pool): State<SqlitePool>,
    mut req: Request,
    next: Next,
) -> Response {
    let secret = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_string);
    let refuse = |message: &str| {
        (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({ "message": message })),
        )
            .into_response()
    };
    let Some(secret) = secret else {
        return refuse(
            "missing `Authorization: Bearer <token>`; create a token with `berth token create`",
        );
    };
    match verify(&pool, &secret).await {
        Ok(Some(name)) => {
            req.extensions_mut().insert(Caller(name));
            next.run(req).await
        }
        Ok(None) => refuse("unknown or revoked token"),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "message": format!("failed to check the token: {e}") })),
        )
            .into_response(),
    }
}
