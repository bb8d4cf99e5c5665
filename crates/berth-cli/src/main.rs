//! The `berth` binary: parse arguments, dispatch to a subcommand, exit with its code.

use clap::Parser;

fn main() {
    let cli = berth_cli::Cli::parse();
    std::process::exit(berth_cli::main(cli));
}
