//! `ringroom-server`: the chat-room / push server.
//!
//! The io_uring shards arrive with the server-core issue; for now this binary
//! only parses its command line and says so.

use argh::FromArgs;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The ringroom server.
#[derive(FromArgs)]
struct Args {
    /// address to listen on (default 0.0.0.0:7700)
    #[argh(option, default = "String::from(\"0.0.0.0:7700\")")]
    listen: String,
}

fn main() {
    let args: Args = argh::from_env();
    eprintln!(
        "ringroom-server: not built yet (protocol v{}); would listen on {}",
        proto::VERSION,
        args.listen
    );
    std::process::exit(2);
}
