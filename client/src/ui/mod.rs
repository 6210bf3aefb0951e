//! The terminal side: how notes read as lines, and progress bars.

pub mod bars;

use std::sync::Mutex;

use rustyline::ExternalPrinter;

use crate::body::printable;
use crate::explain::explain;
use crate::files::hex;
use crate::files::inbound::Incoming;
use crate::runtime::Note;
use crate::session::{Event, Lost};

/// Where lines go: stdout, or above the prompt of a line editor.
pub enum Printer {
    /// Plain stdout.
    Stdout,
    /// rustyline's printer, which redraws the prompt and what is typed.
    Editor(Mutex<Box<dyn ExternalPrinter + Send>>),
}

impl Printer {
    /// Prints one line.
    pub fn line(&self, text: &str) {
        match self {
            Printer::Stdout => println!("{text}"),
            Printer::Editor(p) => {
                if p.lock().unwrap().print(format!("{text}\n")).is_err() {
                    println!("{text}");
                }
            }
        }
    }
}

/// The terminal's mode at start, put back at the end: the line editor puts
/// the terminal in raw mode while it reads, and the chat may end (the server
/// ended it, SIGTERM) while it does.
pub struct TerminalMode(Option<nix::sys::termios::Termios>);

impl TerminalMode {
    /// Saves the mode of stdin (nothing if stdin is not a terminal).
    pub fn save() -> TerminalMode {
        TerminalMode(nix::sys::termios::tcgetattr(std::io::stdin()).ok())
    }

    /// Puts it back.
    pub fn restore(self) {
        if let Some(mode) = self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                &mode,
            );
        }
    }
}

/// The local time of day, for incoming lines.
pub fn now_hms() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// Bytes as people read them.
pub fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

fn lost(why: &Lost) -> String {
    match why {
        Lost::Closed(e) => format!("connection lost: {e}"),
        Lost::Silent(t) => format!(
            "the server answered nothing for {:.1} s: presumed dead",
            t.as_secs_f64()
        ),
        Lost::NoWelcome => "the server did not answer HELLO in time".into(),
        Lost::Error(code, reason) => format!("server error {code}: {reason} ({})", explain(*code)),
        Lost::GoAway(code, reason) => {
            format!("server said goodbye, {code}: {reason} ({})", explain(*code))
        }
    }
}

fn retry(retry_in: &Option<std::time::Duration>) -> String {
    match retry_in {
        Some(d) => format!("; reconnecting in {:.1} s", d.as_secs_f64()),
        None => String::new(),
    }
}

/// A note as the line(s) a person reads; `None` for what needs no line.
pub fn describe(note: &Note) -> Option<String> {
    Some(match note {
        Note::Connecting(addr) => format!("-- connecting to {addr}"),
        Note::Session(ev) => match ev {
            Event::Welcomed { welcome, again } => format!(
                "-- {} (connection {:#x}, heartbeat {} ms, messages up to {})",
                if *again { "reconnected" } else { "connected" },
                welcome.conn_id,
                welcome.heartbeat_ms,
                bytes(u64::from(welcome.max_payload))
            ),
            Event::Joined { room, again } => {
                if *again {
                    format!("-- rejoined {room}")
                } else {
                    format!("-- joined {room}")
                }
            }
            Event::Left { room } => format!("-- left {room}"),
            Event::JoinRefused { room, reason } => {
                format!(
                    "-- could not join {room}: {reason} ({})",
                    explain(proto::ErrorCode::LIMIT)
                )
            }
            Event::Refused { code, reason } if *code == proto::ErrorCode::GAP => {
                format!("-- [{reason}] {}", explain(*code))
            }
            Event::Refused { code, reason } => {
                format!("-- server refused, {code}: {reason} ({})", explain(*code))
            }
            Event::Lost { why, retry_in } => format!("-- {}{}", lost(why), retry(retry_in)),
            Event::ConnectFailed { error, retry_in } => {
                format!("-- cannot connect: {error}{}", retry(retry_in))
            }
        },
        Note::Text {
            room,
            from,
            sender,
            text,
            raw,
        } => {
            if *raw {
                format!("{} [{room}] <{from:#x}> {text}", now_hms())
            } else {
                format!("{} [{room}] {sender}: {text}", now_hms())
            }
        }
        Note::Incoming(inc) => match inc {
            Incoming::Started {
                sender,
                file_name,
                size,
                room,
                ..
            } => format!(
                "-- [{room}] {} is sending {} ({})",
                printable(sender),
                printable(file_name),
                bytes(*size)
            ),
            Incoming::Saved {
                sender,
                path,
                size,
                sha256,
                ..
            } => format!(
                "-- saved {} ({}, sha256 {}) from {}",
                printable(&path.to_string_lossy()),
                bytes(*size),
                hex(sha256),
                printable(sender)
            ),
            Incoming::Discarded {
                sender,
                file_name,
                why,
                ..
            } => format!(
                "-- {} {} from {}: {why}",
                if why.had_bytes() {
                    "deleted"
                } else {
                    "not saved:"
                },
                printable(file_name),
                if sender.is_empty() {
                    "?".into()
                } else {
                    printable(sender)
                }
            ),
            Incoming::Raw {
                key,
                bytes: n,
                cancelled,
                ..
            } => format!(
                "-- a stream of {} from {:#x} that is not a file{}",
                bytes(*n),
                key.0,
                if *cancelled { " (cancelled)" } else { "" }
            ),
        },
        Note::SendStarted {
            id,
            name,
            size,
            room,
        } => format!("-- sending #{id} {name} ({}) to {room}", bytes(*size)),
        Note::SendDone { id } => format!("-- sent #{id}"),
        Note::SendFailed { id, why } => format!("-- #{id} not sent: {why}"),
        Note::Info(text) => format!("-- {text}"),
    })
}
