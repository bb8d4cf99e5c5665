//! The `berth` command line: arguments, one file per subcommand in `commands/`, terminal
//! rendering of runner events, and the mapping of failures to exit codes.

mod args;
mod commands;
mod exit;
mod render;

pub use args::{Cli, Command};
pub use exit::{ExitCode, Failure};

/// Runs the parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    berth_engine::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth: failed to start the async runtime: {e}");
            return ExitCode::Infrastructure as i32;
        }
    };
    let result = runtime.block_on(commands::dispatch(cli));
    // Don't wait for stray blocking tasks (e.g. a stdin reader) at exit.
    runtime.shutdown_background();
    match result {
        Ok(code) => code as i32,
        Err(f) => {
            eprintln!("{f}");
            f.code as i32
        }
    }
}
