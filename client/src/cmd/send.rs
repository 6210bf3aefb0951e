//! `ringroom send`: files to a room, each as one stream, with progress.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use argh::FromArgs;

use super::{interrupt_flag, leave, step, Connect};
use crate::explain::exit;
use crate::runtime::Note;
use crate::session::Event;
use crate::ui::bars::Bars;

/// Send files to everyone in a room: each file one stream (a header, its
/// bytes, its SHA-256), several at once. Ctrl-C cancels them: receivers
/// delete what they had. Exit 0 when every file went to the server, 1 when
/// one did not, 3 when the server cannot be reached, 4 when it ended the
/// session, 130 on Ctrl-C.
#[derive(FromArgs)]
#[argh(subcommand, name = "send")]
pub struct Args {
    /// the server: HOST[:PORT] (port 7700 by default)
    #[argh(positional)]
    pub addr: String,
    /// the room
    #[argh(positional)]
    pub room: String,
    /// the files
    #[argh(positional)]
    pub files: Vec<PathBuf>,
    /// the name receivers see (default: $USER)
    #[argh(option)]
    pub name: Option<String>,
    /// at most this many bytes a second for the files (e.g. 10MiB): leaves
    /// room on a shared link
    #[argh(option, from_str_fn(super::parse_bytes))]
    pub rate: Option<u64>,
}

/// The subcommand.
pub fn run(args: Args) -> u8 {
    if args.files.is_empty() {
        eprintln!("ringroom send: no files given");
        return exit::USAGE;
    }
    let interrupted = interrupt_flag();
    let name = super::name_or_default(args.name);
    let mut rt = match super::start("send", &args.addr, &args.room, |addr| Connect {
        addr,
        name,
        heartbeat_ms: 0,
        // A transfer cannot resume on a new connection: fail, do not retry.
        reconnect: false,
        dir: None,
        max_file_bytes: None,
        rate: args.rate,
    }) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mut left = 0;
    for path in &args.files {
        match rt.send_file(&args.room, path) {
            Ok(_) => left += 1,
            Err(e) => {
                eprintln!("ringroom send: {e}");
                return exit::FAILED;
            }
        }
    }
    let mut bars = Bars::on_stderr();
    let mut failed = 0;
    let code = loop {
        if interrupted.load(Ordering::Relaxed) {
            let n = rt.cancel_all();
            leave(&mut rt, &mut bars, Duration::from_secs(2));
            eprintln!("ringroom send: interrupted; {n} transfer(s) cancelled");
            return exit::INTERRUPTED;
        }
        let end = step(&mut rt, &mut bars, |note| match note {
            Note::SendDone { .. } => {
                left -= 1;
                None
            }
            Note::SendFailed { .. } => {
                left -= 1;
                failed += 1;
                None
            }
            Note::Session(Event::JoinRefused { .. }) => Some(exit::FAILED),
            // A NOT_MEMBER or LIMIT on a fragment: the stream is refused.
            Note::Session(Event::Refused { .. }) => {
                failed += 1;
                None
            }
            _ => None,
        });
        if let Some(code) = end {
            break code;
        }
        if left == 0 {
            break if failed > 0 { exit::FAILED } else { exit::OK };
        }
    };
    // Everything was written; the server delivers it once it sees our end.
    leave(&mut rt, &mut bars, Duration::from_secs(10));
    code
}
