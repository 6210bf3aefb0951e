//! `ringroom`: find a ringroom server on the LAN, chat in rooms, send and
//! receive files. `ringroom --help` and `ringroom <command> --help` say how.

use argh::FromArgs;
use client::cmd;

/// ringroom, the client for people: find a server on the LAN, chat in
/// rooms, send and receive files.
#[derive(FromArgs)]
struct Top {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Discover(cmd::discover::Args),
    Chat(cmd::chat::Args),
    Send(cmd::send::Args),
    Recv(cmd::recv::Args),
}

fn main() {
    let top: Top = argh::from_env();
    let code = match top.command {
        Command::Discover(a) => cmd::discover::run(a),
        Command::Chat(a) => cmd::chat::run(a),
        Command::Send(a) => cmd::send::run(a),
        Command::Recv(a) => cmd::recv::run(a),
    };
    std::process::exit(i32::from(code));
}
