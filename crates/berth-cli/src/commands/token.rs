//! `berth token create|list|revoke`: the build service's API tokens, in its database.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::{ExitCode, Failure};

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The service's data directory (as given to `berth serve --data`).
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".berth/server",
        global = true
    )]
    pub data: PathBuf,
    #[command(subcommand)]
    pub action: TokenAction,
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token and print it (shown only this once).
    Create {
        /// A name to recognise it by.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke the tokens with this name, or the token with this id.
    Revoke {
        #[arg(value_name = "NAME|ID")]
        which: String,
    },
}

pub(crate) async fn token(args: TokenArgs) -> Result<ExitCode, Failure> {
    let pool = berth_server::open_db(&args.data)
        .await
        .map_err(|e| Failure::infra(e.to_string()))?;
    let infra = |e: berth_server::ServerError| Failure::infra(e.to_string());
    match args.action {
        TokenAction::Create { name } => {
            let (id, secret) = berth_server::auth::create(&pool, &name)
                .await
                .map_err(infra)?;
            eprintln!("berth: created token {id} `{name}` (shown only this once)");
            println!("{secret}");
        }
        TokenAction::List => {
            println!("{:>4}  {:<20}  {:<8}", "ID", "NAME", "STATE");
            for t in berth_server::auth::list(&pool).await.map_err(infra)? {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!("{:>4}  {:<20}  {state:<8}", t.id, t.name);
            }
        }
        TokenAction::Revoke { which } => match berth_server::auth::revoke(&pool, &which).await {
            Ok(n) => eprintln!("berth: revoked {n} token(s)"),
            Err(e @ berth_server::ServerError::NoSuchToken(_)) => {
                return Err(Failure::usage(format!("{e}; see `berth token list`")));
            }
            Err(e) => return Err(infra(e)),
        },
    }
    pool.close().await;
    Ok(ExitCode::Success)
}
