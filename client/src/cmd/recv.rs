//! `ringroom recv`: files (and lines) from a room, saved in a folder.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use argh::FromArgs;

use super::{interrupt_flag, leave, step, Connect};
use crate::explain::exit;
use crate::files::inbound::Incoming;
use crate::runtime::Note;
use crate::ui::bars::Bars;

/// Receive the files sent to a room: each written to a temporary name in
/// --dir, its SHA-256 checked, then renamed (never over an existing file:
/// `name (1).ext`); deleted on cancel or mismatch. Names that are paths
/// (`../x`, `/x`) are refused. Chat lines are printed. Runs until Ctrl-C,
/// or --count files; exit 0 when every file was saved, 1 when one was
/// deleted, 3 when the server cannot be reached, 130 on Ctrl-C.
#[derive(FromArgs)]
#[argh(subcommand, name = "recv")]
pub struct Args {
    /// the server: HOST[:PORT] (port 7700 by default)
    #[argh(positional)]
    pub addr: String,
    /// the room
    #[argh(positional)]
    pub room: String,
    /// where files go (default: the current folder)
    #[argh(option, default = "PathBuf::from(\".\")")]
    pub dir: PathBuf,
    /// exit after this many files (saved or deleted)
    #[argh(option)]
    pub count: Option<u64>,
    /// refuse files larger than this (e.g. 1GiB)
    #[argh(option, from_str_fn(super::parse_bytes))]
    pub max_file_bytes: Option<u64>,
    /// the name we go by (default: $USER)
    #[argh(option)]
    pub name: Option<String>,
}

/// The subcommand.
pub fn run(args: Args) -> u8 {
    if let Err(code) = super::check_dir("recv", &args.dir) {
        return code;
    }
    let interrupted = interrupt_flag();
    let name = super::name_or_default(args.name);
    let dir = args.dir.clone();
    let mut rt = match super::start("recv", &args.addr, &args.room, |addr| Connect {
        addr,
        name,
        heartbeat_ms: 0,
        reconnect: true,
        dir: Some(dir),
        max_file_bytes: args.max_file_bytes,
        rate: None,
    }) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mut bars = Bars::on_stderr();
    let (mut saved, mut deleted) = (0u64, 0u64);
    let code = loop {
        if interrupted.load(Ordering::Relaxed) {
            // Partial files are deleted as the connection goes.
            leave(&mut rt, &mut bars, Duration::from_millis(200));
            return exit::INTERRUPTED;
        }
        let end = step(&mut rt, &mut bars, |note| {
            match note {
                Note::Incoming(Incoming::Saved { .. }) => saved += 1,
                Note::Incoming(Incoming::Discarded { .. }) => deleted += 1,
                _ => {}
            }
            None
        });
        if let Some(code) = end {
            break code;
        }
        if args.count.is_some_and(|n| saved + deleted >= n) {
            break if deleted > 0 { exit::FAILED } else { exit::OK };
        }
    };
    leave(&mut rt, &mut bars, Duration::from_secs(1));
    code
}
