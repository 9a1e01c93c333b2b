//! The `postern` binary: parse the command line, start logging, run the command,
//! and map the outcome to an exit code (0 ok, 1 failure to act on, 2 usage;
//! `postern sendmail` exits with sendmail's codes instead, see cli/sendmail.rs).

use std::process::ExitCode;

/// jemalloc, with its background thread, instead of glibc's malloc (issue #11
/// item 3). Sessions come and go by thousands; glibc kept every page they had
/// used after they closed, since a few live allocations pin each stretch of
/// its heaps. bench/idle.sh, 10,000 idle sessions then closed, PSS 10 s later
/// against the baseline (plaintext / after STARTTLS): glibc 2.8x / 8.0x, none
/// given back; glibc with malloc_trim(0) called after close 1.9x / 3.2x (and it
/// needs unsafe FFI and something to decide when to call it); mimalloc 1.4x /
/// 2.4x; jemalloc 1.5x / 1.6x, purging within its 10 s decay time, with the
/// least per session too (2.0 KiB against glibc's 2.6). Its cost: a baseline
/// about 2 MiB higher.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // As Postfix's `umask = 077`: what the server and the CLI create (the
    // databases with their password hashes, keys, certificates, spooled
    // bodies, run files) is readable by its owner only. Directories that
    // others must traverse are opened up one by one where they are made.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // clap exits with 2 on usage errors and 0 for --help/--version.
    let cli = postern::cli::Cli::from_env();
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
            ExitCode::from(postern::cli::exit_code(&e))
        }
    }
}
