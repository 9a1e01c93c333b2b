//! The `postern` binary: parse the command line, start logging, run the command,
//! and map the outcome to an exit code (0 ok, 1 failure to act on, 2 usage).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // As Postfix's `umask = 077`: what the server and the CLI create (the
    // databases with their password hashes, keys, certificates, spooled
    // bodies, run files) is readable by its owner only. Directories that
    // others must traverse are opened up one by one where they are made.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // clap exits with 2 on usage errors and 0 for --help/--version.
    let cli = postern::cli::Cli::parse();
    postern::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postern: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(postern::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("postern: {e:#}");
            ExitCode::from(1)
        }
    }
}
