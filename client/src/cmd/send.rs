//! `ringroom send`: files to a room, each as one stream, with progress.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use argh::FromArgs;

use super::{close, interrupt_flag, session_end, show, Connect};
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
    let never = crossbeam_channel::never::<()>();
    let code = loop {
        if interrupted.load(Ordering::Relaxed) {
            let n = rt.cancel_all();
            while let Some(note) = rt.poll_note() {
                show(&bars, &note);
            }
            bars.clear();
            eprintln!("ringroom send: interrupted; {n} transfer(s) cancelled");
            for note in close(&mut rt, Duration::from_secs(2)) {
                show(&bars, &note);
            }
            return exit::INTERRUPTED;
        }
        rt.wait(Duration::from_millis(200), &never);
        let mut end = None;
        while let Some(note) = rt.poll_note() {
            match &note {
                Note::SendDone { .. } => left -= 1,
                Note::SendFailed { .. } => {
                    left -= 1;
                    failed += 1;
                }
                Note::Session(Event::JoinRefused { .. }) => end = Some(exit::FAILED),
                // A NOT_MEMBER or LIMIT on a fragment: the stream is refused.
                Note::Session(Event::Refused { .. }) => failed += 1,
                _ => {}
            }
            end = end.or(session_end(&note));
            show(&bars, &note);
        }
        bars.update(&rt);
        if let Some(code) = end {
            break code;
        }
        if left == 0 {
            break if failed > 0 { exit::FAILED } else { exit::OK };
        }
    };
    bars.clear();
    // Everything was written; the server delivers it once it sees our end.
    for note in close(&mut rt, Duration::from_secs(10)) {
        show(&bars, &note);
    }
    code
}
