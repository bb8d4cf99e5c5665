//! One file per subcommand.

mod gc;
pub(crate) mod proxy;
mod run;
pub(crate) mod serve;
pub(crate) mod token;
mod validate;

use crate::{Cli, Command, ExitCode, Failure};

pub(crate) async fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Run(args) => run::run(cli.docker_host.as_deref(), *args).await,
        Command::Validate(args) => validate::validate(args),
        Command::Gc(args) => gc::gc(cli.docker_host.as_deref(), args).await,
        Command::Serve(args) => serve::serve(cli.docker_host.as_deref(), *args).await,
        Command::Token(args) => token::token(args).await,
        Command::Proxy(args) => proxy::proxy(cli.docker_host.as_deref(), *args).await,
    }
}

/// Loads the pipeline file `given` or the default one in the current directory.
pub(crate) fn load_pipeline(
    given: Option<&std::path::Path>,
) -> Result<(std::path::PathBuf, berth_pipeline::Pipeline), Failure> {
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::infra(format!("failed to read the current directory: {e}")))?;
    let path = berth_pipeline::find_pipeline_file(given, &cwd)
        .map_err(|e| Failure::usage(e.to_string()))?;
    match berth_pipeline::load(&path) {
        Ok(p) => Ok((path, p)),
        Err(berth_pipeline::LoadError::Io { .. }) if !path.exists() => Err(Failure::usage(
            format!("pipeline file {} does not exist", path.display()),
        )),
        Err(e @ berth_pipeline::LoadError::Io { .. }) => Err(Failure::usage(e.to_string())),
        Err(e) => Err(Failure::usage(e.to_string())),
    }
}

/// Connects to the daemon named by `--docker-host` / `DOCKER_HOST`.
pub(crate) async fn connect(
    docker_host: Option<&str>,
) -> Result<berth_engine::DockerEngine, Failure> {
    let address = berth_engine::DaemonAddress::resolve(docker_host);
    Ok(berth_engine::DockerEngine::connect(address).await?)
}
