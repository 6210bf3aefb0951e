//! `ringroom chat`: an interactive chat in rooms, with files.
//!
//! Two threads: the line editor (rustyline) reads what is typed, the main
//! thread runs the session and prints what comes in above the prompt. After
//! each line the editor waits for the main thread's answer (the next prompt,
//! or the word to stop), so a command has taken effect before the next
//! prompt shows, and `/quit` ends without a stray prompt.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argh::FromArgs;
use crossbeam_channel::{Receiver, Sender};
use rustyline::error::ReadlineError;

use super::{interrupt_flag, session_end, show, Connect};
use crate::explain::exit;
use crate::runtime::{Note, Runtime};
use crate::session::Event;
use crate::ui::bars::Bars;
use crate::ui::Printer;

/// Chat in a room: type a line to say it; incoming lines show time, room,
/// sender and text. Files sent to the room are saved in --dir (checked,
/// never over an existing file). Type /help for the commands (/join,
/// /leave, /room, /rooms, /send, /cancel, /quit). A lost server is
/// reconnected with backoff and the rooms rejoined. Ctrl-C cancels the
/// files being sent, or leaves when none are; Ctrl-D leaves. Exit 0 on
/// /quit, 3 when no server is found, 4 when the server ended the session.
#[derive(FromArgs)]
#[argh(subcommand, name = "chat")]
pub struct Args {
    /// ADDR ROOM, or ROOM with --discover; ADDR is HOST[:PORT] (port 7700
    /// by default)
    #[argh(positional)]
    pub where_: Vec<String>,
    /// the name others see (default: $USER)
    #[argh(option)]
    pub name: Option<String>,
    /// find the server by UDP discovery and take the nearest
    #[argh(switch)]
    pub discover: bool,
    /// the servers' discovery port, with --discover (default 7701)
    #[argh(option, default = "proto::DEFAULT_DISCOVERY_PORT")]
    pub discovery_port: u16,
    /// where received files go (default: the current folder)
    #[argh(option, default = "PathBuf::from(\".\")")]
    pub dir: PathBuf,
    /// take no files
    #[argh(switch)]
    pub no_files: bool,
    /// refuse files larger than this (e.g. 1GiB)
    #[argh(option, from_str_fn(super::parse_bytes))]
    pub max_file_bytes: Option<u64>,
    /// at most this many bytes a second for files sent (e.g. 10MiB), so
    /// chat lines are not slowed on a thin link
    #[argh(option, from_str_fn(super::parse_bytes))]
    pub rate: Option<u64>,
    /// the heartbeat to ask the server for, in ms (default: the server's)
    #[argh(option, default = "0")]
    pub heartbeat_ms: u32,
}

const HELP: &str = "\
commands:
  /join ROOM       join ROOM and talk there
  /leave [ROOM]    leave ROOM (default: the current one)
  /room ROOM       talk in ROOM (one joined)
  /rooms           the rooms, and which one is current
  /send FILE...    send files to the current room (quote names with spaces)
  /cancel [N|all]  cancel file #N, or every file being sent
  /quit            leave (also Ctrl-D)
  //text           say a line that starts with /
Ctrl-C cancels the files being sent; with none, it leaves.";

/// What the line editor hands over.
enum Input {
    Line(String),
    Interrupt,
    Eof,
    Broken(String),
}

/// Where the chat is.
struct Chat {
    rt: Runtime,
    name: String,
    /// The room lines go to.
    current: Option<String>,
}

/// What a typed line asks for.
enum Outcome {
    Stay,
    Quit,
}

/// The subcommand.
pub fn run(args: Args) -> u8 {
    let (addr, room) = match place(&args) {
        Ok(p) => p,
        Err((code, e)) => {
            eprintln!("ringroom chat: {e}");
            return code;
        }
    };
    if !args.no_files {
        if let Err(code) = super::check_dir("chat", &args.dir) {
            return code;
        }
    }
    let name = super::name_or_default(args.name);
    let rt = Connect {
        addr,
        name: name.clone(),
        heartbeat_ms: args.heartbeat_ms,
        reconnect: true,
        dir: (!args.no_files).then_some(args.dir),
        max_file_bytes: args.max_file_bytes,
        rate: args.rate,
    }
    .runtime();
    let mut chat = Chat {
        rt,
        name,
        current: None,
    };
    if let Err(e) = chat.join(&room) {
        eprintln!("ringroom chat: {e}");
        return exit::USAGE;
    }
    let terminal = crate::ui::TerminalMode::save();
    let code = chat.run();
    terminal.restore();
    code
}

/// The server and the first room, from the arguments (or by discovery).
fn place(args: &Args) -> Result<(std::net::SocketAddr, String), (u8, String)> {
    let usage = |e: &str| (exit::USAGE, format!("{e} (see ringroom chat --help)"));
    match (args.discover, args.where_.as_slice()) {
        (false, [addr, room]) => {
            let addr = super::resolve(addr).map_err(|e| (exit::NO_SERVER, e))?;
            Ok((addr, room.clone()))
        }
        (true, [room]) => {
            let found = super::discover::find(&super::discover::Args {
                timeout: Duration::from_secs(1),
                broadcast: None,
                port: args.discovery_port,
                json: false,
            })
            .map_err(|e| (exit::FAILED, e))?;
            let Some(nearest) = found.first() else {
                return Err((
                    exit::NO_SERVER,
                    format!(
                        "no server answered discovery on UDP port {} within 1 s",
                        args.discovery_port
                    ),
                ));
            };
            eprintln!("ringroom chat: found {}", crate::discover::line(nearest));
            Ok((nearest.addr, room.clone()))
        }
        (false, [_]) => Err(usage("give ADDR ROOM, or ROOM with --discover")),
        (true, _) => Err(usage("with --discover, give only ROOM")),
        (false, _) => Err(usage("give ADDR ROOM")),
    }
}

impl Chat {
    fn prompt(&self) -> String {
        match &self.current {
            Some(room) => format!("[{room}] > "),
            None => "(no room: /join ROOM) > ".to_string(),
        }
    }

    fn join(&mut self, room: &str) -> Result<(), String> {
        self.rt.join(room)?;
        self.current = Some(room.to_string());
        Ok(())
    }

    fn run(&mut self) -> u8 {
        let (input_tx, input_rx) = crossbeam_channel::bounded::<Input>(1);
        let (ack_tx, ack_rx) = crossbeam_channel::bounded::<Option<String>>(1);
        let (printer_tx, printer_rx) = crossbeam_channel::bounded::<Printer>(1);
        let first_prompt = self.prompt();
        std::thread::Builder::new()
            .name("line editor".into())
            .spawn(move || editor(first_prompt, printer_tx, input_tx, ack_rx))
            .expect("a thread starts");
        let printer = Arc::new(printer_rx.recv().unwrap_or(Printer::Stdout));
        let mut bars = Bars::as_lines(printer.clone());
        let terminated = interrupt_flag();
        let code = loop {
            if terminated.load(Ordering::Relaxed) {
                break exit::INTERRUPTED;
            }
            let input = self.rt.wait(Duration::from_millis(200), &input_rx);
            let mut end = None;
            while let Some(note) = self.rt.poll_note() {
                end = end.or(session_end(&note));
                self.on_note(&note);
                show(&bars, &note);
            }
            bars.update(&self.rt);
            if let Some(code) = end {
                break code;
            }
            let Some(input) = input else { continue };
            let outcome = match input {
                // A paste (bracketed) comes as one "line" with newlines in it.
                Input::Line(text) => {
                    let mut outcome = Outcome::Stay;
                    for line in text.split('\n') {
                        if let Outcome::Quit = self.on_line(line, &bars) {
                            outcome = Outcome::Quit;
                            break;
                        }
                    }
                    outcome
                }
                Input::Interrupt => {
                    let n = self.rt.cancel_all();
                    if n == 0 {
                        Outcome::Quit
                    } else {
                        bars.println(&format!("-- {n} file(s) cancelled (Ctrl-C again leaves)"));
                        Outcome::Stay
                    }
                }
                Input::Eof => Outcome::Quit,
                Input::Broken(e) => {
                    bars.println(&format!("-- the terminal failed: {e}"));
                    break exit::FAILED;
                }
            };
            match outcome {
                Outcome::Stay => {
                    let _ = ack_tx.send(Some(self.prompt()));
                }
                Outcome::Quit => break exit::OK,
            }
        };
        let n = self.rt.cancel_all();
        if n > 0 {
            bars.println(&format!("-- {n} file(s) cancelled"));
        }
        super::leave(&mut self.rt, &mut bars, Duration::from_secs(2));
        let _ = ack_tx.try_send(None);
        code
    }

    /// Keeps the current room right as rooms come and go.
    fn on_note(&mut self, note: &Note) {
        if let Note::Session(Event::JoinRefused { room, .. } | Event::Left { room }) = note {
            self.gone(room);
        }
    }

    /// `room` is no longer ours: if it was the current one, another we have is.
    fn gone(&mut self, room: &str) {
        if self.current.as_deref() == Some(room) {
            self.current = self.rt.session().rooms().map(|(r, _)| r.to_string()).next();
        }
    }

    fn on_line(&mut self, line: &str, bars: &Bars) -> Outcome {
        let say = |s: &str| bars.println(&format!("-- {s}"));
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Outcome::Stay;
        }
        let (command, rest) = match line.strip_prefix('/') {
            Some(escaped) if escaped.starts_with('/') => ("", escaped),
            Some(cmd) => cmd.split_once(' ').unwrap_or((cmd, "")),
            None => ("", line),
        };
        let rest = rest.trim();
        match command {
            "" => match &self.current {
                Some(room) => {
                    let text = if line.starts_with("//") {
                        &line[1..]
                    } else {
                        line
                    };
                    if let Err(e) = self.rt.say(room, &self.name, text) {
                        say(&format!("not said: {e}"));
                    }
                }
                None => say("not in a room: /join ROOM first"),
            },
            "join" if !rest.is_empty() => match self.join(rest) {
                Ok(()) => {}
                Err(e) => say(&e),
            },
            "leave" => {
                let room = if rest.is_empty() {
                    self.current.clone()
                } else {
                    Some(rest.to_string())
                };
                match room {
                    Some(room) => match self.rt.leave(&room) {
                        Ok(()) => self.gone(&room),
                        Err(e) => say(&e),
                    },
                    None => say("not in a room"),
                }
            }
            "room" if !rest.is_empty() => {
                if self.rt.session().rooms().any(|(r, _)| r == rest) {
                    self.current = Some(rest.to_string());
                } else {
                    say(&format!("not in {rest:?}: /join {rest} first"));
                }
            }
            "rooms" => {
                let rooms: Vec<String> = self
                    .rt
                    .session()
                    .rooms()
                    .map(|(r, joined)| {
                        let mark = if self.current.as_deref() == Some(r) {
                            "*"
                        } else {
                            " "
                        };
                        let state = if joined { "joined" } else { "joining" };
                        format!("{mark} {r} ({state})")
                    })
                    .collect();
                if rooms.is_empty() {
                    say("no rooms");
                }
                for r in rooms {
                    say(&r);
                }
            }
            "send" => self.send(rest, bars),
            "cancel" => match rest {
                "" | "all" => {
                    if self.rt.cancel_all() == 0 {
                        say("no file is being sent");
                    }
                }
                n => match n.trim_start_matches('#').parse::<u32>() {
                    Ok(id) if self.rt.cancel(id) => {}
                    Ok(id) => say(&format!("no file #{id} is being sent")),
                    Err(_) => say("/cancel N, or /cancel all"),
                },
            },
            "quit" | "exit" => return Outcome::Quit,
            "help" => bars.println(HELP),
            other => say(&format!("/{other}: not a command here; /help lists them")),
        }
        Outcome::Stay
    }

    fn send(&mut self, words: &str, bars: &Bars) {
        let say = |s: &str| bars.println(&format!("-- {s}"));
        let Some(room) = self.current.clone() else {
            return say("not in a room: /join ROOM first");
        };
        let files = match shlex::split(words) {
            Some(files) if !files.is_empty() => files,
            Some(_) => return say("/send FILE... (quote names with spaces)"),
            None => return say("unbalanced quotes in /send"),
        };
        for file in files {
            if let Err(e) = self.rt.send_file(&room, std::path::Path::new(&file)) {
                say(&format!("not sent: {e}"));
            }
        }
    }
}

/// The line editor's thread: reads lines, hands each to the main thread,
/// waits for the next prompt.
fn editor(
    mut prompt: String,
    printer_tx: Sender<Printer>,
    input_tx: Sender<Input>,
    ack_rx: Receiver<Option<String>>,
) {
    let mut ed = match rustyline::DefaultEditor::new() {
        Ok(ed) => ed,
        Err(e) => {
            let _ = printer_tx.send(Printer::Stdout);
            let _ = input_tx.send(Input::Broken(e.to_string()));
            return;
        }
    };
    let printer = match ed.create_external_printer() {
        Ok(p) => Printer::Editor(Mutex::new(Box::new(p))),
        Err(_) => Printer::Stdout,
    };
    let _ = printer_tx.send(printer);
    loop {
        let input = match ed.readline(&prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = ed.add_history_entry(line.as_str());
                }
                Input::Line(line)
            }
            Err(ReadlineError::Interrupted) => Input::Interrupt,
            Err(ReadlineError::Eof) => Input::Eof,
            Err(e) => Input::Broken(e.to_string()),
        };
        let last = matches!(input, Input::Eof | Input::Broken(_));
        if input_tx.send(input).is_err() || last {
            return;
        }
        match ack_rx.recv() {
            Ok(Some(next)) => prompt = next,
            _ => return,
        }
    }
}
