//! `loadgen`: the ringroom load generator.
//!
//! The engine arrives with the load-generator issue; for now this binary only
//! parses its command line and says so.
#![forbid(unsafe_code)]

use argh::FromArgs;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The ringroom load generator.
#[derive(FromArgs)]
struct Args {
    /// scenario to run
    #[argh(option, default = "String::from(\"c10k\")")]
    scenario: String,
}

fn main() {
    let args: Args = argh::from_env();
    eprintln!(
        "loadgen: not built yet (protocol v{}); would run scenario {}",
        proto::VERSION,
        args.scenario
    );
    std::process::exit(2);
}
