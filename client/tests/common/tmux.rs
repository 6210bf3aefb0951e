//! A real terminal: a program run in a tmux session of its own (a private
//! tmux server per terminal), typed into with send-keys, read with
//! capture-pane. Dropping it kills the tmux server and the program.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::TIMEOUT;

/// One terminal.
pub struct Terminal {
    socket: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Terminal {
    /// Runs `argv` in `dir` in a new 160x50 terminal. When the program ends,
    /// the terminal shows `EXIT=<code>` and stays open.
    pub fn run(dir: &Path, argv: &[&str]) -> Terminal {
        let socket = format!(
            "ringroom-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let words: Vec<String> = argv
            .iter()
            .map(|a| shlex::try_quote(a).unwrap().into_owned())
            .collect();
        let script = format!(
            "cd {} && {}; echo EXIT=$?; sleep 3600",
            shlex::try_quote(&dir.to_string_lossy()).unwrap(),
            words.join(" ")
        );
        let t = Terminal { socket };
        let status = t
            .tmux()
            .args(["new-session", "-d", "-s", "main", "-x", "160", "-y", "50"])
            .arg(script)
            .status()
            .expect("tmux runs (apt-get install tmux)");
        assert!(status.success(), "tmux new-session failed");
        let _ = t
            .tmux()
            .args(["set-option", "-g", "history-limit", "50000"])
            .status();
        t
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// Everything the terminal has shown, history and screen, without the
    /// blank lines.
    pub fn screen(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-J", "-S", "-", "-t", "main"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until the screen holds `text`; returns the screen.
    pub fn wait_for(&self, text: &str) -> String {
        self.wait_for_within(text, TIMEOUT)
    }

    /// As [`Terminal::wait_for`], within `within`.
    pub fn wait_for_within(&self, text: &str, within: Duration) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                start.elapsed() < within,
                "waited {within:?} for {text:?}; the terminal shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the last line is a prompt waiting for input.
    fn at_prompt(&self) -> bool {
        self.screen()
            .lines()
            .last()
            .is_some_and(|l| l.trim_end().ends_with('>'))
    }

    /// Types `line` and Enter as a person would: once the prompt shows, and
    /// returns once the next prompt does (the command has been taken).
    /// (rustyline drops keys typed ahead of a prompt in one burst.)
    pub fn type_line(&self, line: &str) {
        let start = Instant::now();
        while !self.at_prompt() {
            assert!(
                start.elapsed() < TIMEOUT,
                "no prompt to type {line:?} at:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let typed = self.typed(line);
        let status = self
            .tmux()
            .args(["send-keys", "-t", "main", "-l", line])
            .status()
            .unwrap();
        assert!(status.success());
        self.keys(&["Enter"]);
        let start = Instant::now();
        let taken = || self.typed(line) > typed && self.at_prompt();
        let ended = || self.screen().contains("EXIT=");
        while !(taken() || ended()) {
            assert!(
                start.elapsed() < TIMEOUT,
                "{line:?} was not taken:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lines that show `line` typed at a prompt.
    fn typed(&self, line: &str) -> usize {
        let shown = format!("> {}", line.trim_end());
        self.screen()
            .lines()
            .filter(|l| l.trim_end().ends_with(&shown))
            .count()
    }

    /// Presses keys by tmux's names (`Enter`, `C-c`, `C-d`).
    pub fn keys(&self, keys: &[&str]) {
        let status = self
            .tmux()
            .args(["send-keys", "-t", "main"])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the program to end: its exit code.
    pub fn exit_code(&self) -> i32 {
        let screen = self.wait_for("EXIT=");
        let rest = &screen[screen.rfind("EXIT=").unwrap() + 5..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}
