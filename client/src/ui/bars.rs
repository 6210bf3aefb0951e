//! Progress bars with rate and ETA (indicatif) for the files going out and
//! coming in. On a plain terminal they draw on stderr; in `chat`, where the
//! line editor owns the screen, each bar is a line printed above the prompt
//! every two seconds ([`LineTerm`]).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use super::Printer;
use crate::runtime::{self, Runtime};

/// What a bar stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transfer {
    /// A file we send, by our number.
    Out(u32),
    /// A file coming in, by (publisher, stream).
    In(u64, u16),
}

/// The bars on screen.
pub struct Bars {
    multi: Option<MultiProgress>,
    printer: Option<Arc<Printer>>,
    bars: BTreeMap<Transfer, ProgressBar>,
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>4} {msg:24!} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta}",
    )
    .expect("a valid template")
    .progress_chars("=> ")
}

impl Bars {
    /// Bars drawn on stderr (hidden when stderr is not a terminal).
    pub fn on_stderr() -> Bars {
        Bars {
            multi: Some(MultiProgress::new()),
            printer: None,
            bars: BTreeMap::new(),
        }
    }

    /// Bars printed as lines through `printer`, once a second.
    pub fn as_lines(printer: Arc<Printer>) -> Bars {
        Bars {
            multi: None,
            printer: Some(printer),
            bars: BTreeMap::new(),
        }
    }

    /// Prints a line without tearing the bars.
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(m) if !m.is_hidden() => {
                let _ = m.println(line);
            }
            _ => match &self.printer {
                Some(p) => p.line(line),
                None => println!("{line}"),
            },
        }
    }

    fn bar(&mut self, key: Transfer, name: &str, size: u64) -> &ProgressBar {
        let multi = &self.multi;
        let printer = &self.printer;
        self.bars.entry(key).or_insert_with(|| {
            // Named before it is shown, so no line goes out without its name.
            let bar = ProgressBar::hidden().with_style(style());
            bar.set_length(size);
            bar.set_prefix(match key {
                Transfer::Out(id) => format!("#{id}>"),
                Transfer::In(..) => "<".to_string(),
            });
            bar.set_message(name.to_string());
            match (multi, printer) {
                (Some(m), _) => m.add(bar),
                (None, Some(p)) => {
                    bar.set_draw_target(ProgressDrawTarget::term_like(Box::new(LineTerm {
                        printer: p.clone(),
                        pending: Mutex::new(String::new()),
                        last: Mutex::new(None),
                    })));
                    bar
                }
                (None, None) => bar,
            }
        })
    }

    /// Brings every bar up to date with the runtime's transfers, and takes
    /// away the bars of transfers that ended.
    pub fn update(&mut self, rt: &Runtime) {
        let mut live = Vec::new();
        for (id, s) in rt.sending() {
            let key = Transfer::Out(*id);
            self.bar(key, &s.name, s.size)
                .set_position(runtime::sent(s));
            live.push(key);
        }
        for p in rt.receiving() {
            let key = Transfer::In(p.key.0, p.key.1);
            self.bar(key, &p.file_name, p.size).set_position(p.received);
            live.push(key);
        }
        self.bars.retain(|key, bar| {
            let keep = live.contains(key);
            if !keep {
                bar.finish_and_clear();
            }
            keep
        });
    }

    /// Takes every bar away.
    pub fn clear(&mut self) {
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
        self.bars.clear();
    }
}

/// The least time between two lines of one bar in a chat: indicatif draws
/// in bursts (its limiter lets ten through at once), a chat reads a line
/// every few seconds.
const LINE_EVERY: Duration = Duration::from_secs(2);

/// A terminal for indicatif that turns a draw of a bar into one printed
/// line, at most one per [`LINE_EVERY`]: the line editor keeps the screen,
/// the bar scrolls with the chat.
struct LineTerm {
    printer: Arc<Printer>,
    pending: Mutex<String>,
    last: Mutex<Option<Instant>>,
}

impl fmt::Debug for LineTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LineTerm")
    }
}

impl TermLike for LineTerm {
    fn width(&self) -> u16 {
        110
    }
    fn move_cursor_up(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        self.pending.lock().unwrap().push_str(s);
        Ok(())
    }
    fn clear_line(&self) -> io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        let line = std::mem::take(&mut *self.pending.lock().unwrap());
        let line = line.trim_end();
        let mut last = self.last.lock().unwrap();
        let due = last.is_none_or(|t| t.elapsed() >= LINE_EVERY);
        if !line.is_empty() && due {
            *last = Some(Instant::now());
            self.printer.line(line);
        }
        Ok(())
    }
}
