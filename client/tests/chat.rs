//! `ringroom chat` in two real terminals (tmux) against a real server: what
//! one types the other reads with the sender's name; a 50 MB file arrives
//! intact while lines still flow both ways; a cancelled file leaves nothing
//! behind; a restarted server is found again and the rooms rejoined.

mod common;

use common::tmux::Terminal;
use common::{random_file, ringroom_path, sha256_of, Server};

/// A line as the other terminal shows it: `HH:MM:SS [room] sender: text`.
fn shown(screen: &str, room: &str, sender: &str, text: &str) -> bool {
    let tail = format!(" [{room}] {sender}: {text}");
    screen.lines().any(|l| {
        l.ends_with(&tail)
            && l.len() == 8 + tail.len()
            && l.as_bytes()[..8].iter().enumerate().all(|(i, b)| {
                if i == 2 || i == 5 {
                    *b == b':'
                } else {
                    b.is_ascii_digit()
                }
            })
    })
}

/// Where `text` first shows on `screen` (panics if it does not).
fn at(screen: &str, text: &str) -> usize {
    screen
        .find(text)
        .unwrap_or_else(|| panic!("{text:?} is not on the screen:\n{screen}"))
}

/// Waits until `text` shows `n` times on `t`.
fn wait_for_count(t: &Terminal, text: &str, n: usize) {
    common::wait_until(common::TIMEOUT, text, || {
        t.screen().matches(text).count() >= n
    });
}

fn parts_in(dir: &std::path::Path) -> Vec<String> {
    common::names_in(dir)
        .into_iter()
        .filter(|n| n.ends_with(".part"))
        .collect()
}

#[test]
fn two_terminals_chat_and_a_file_goes_while_lines_flow_both_ways() {
    let server = Server::start(&[]);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sum = random_file(&a.path().join("big.bin"), 50_000_000);
    random_file(&a.path().join("other.bin"), 50_000_001);
    let target = server.target();
    // 10 MiB/s: the 50 MB take about five seconds, time for lines both ways.
    let alice = Terminal::run(
        a.path(),
        &[
            ringroom_path(),
            "chat",
            &target,
            "lobby",
            "--name",
            "alice",
            "--rate",
            "10MiB",
        ],
    );
    let bob = Terminal::run(
        b.path(),
        &[ringroom_path(), "chat", &target, "lobby", "--name", "bob"],
    );
    alice.wait_for("-- joined lobby");
    bob.wait_for("-- joined lobby");

    alice.type_line("hello bob");
    let screen = bob.wait_for("alice: hello bob");
    assert!(shown(&screen, "lobby", "alice", "hello bob"), "{screen}");
    bob.type_line("hi alice, 100% here");
    let screen = alice.wait_for("bob: hi alice");
    assert!(
        shown(&screen, "lobby", "bob", "hi alice, 100% here"),
        "{screen}"
    );
    // A line that starts with a slash, escaped.
    alice.type_line("//shrug");
    bob.wait_for("alice: /shrug");

    alice.type_line("/send big.bin");
    alice.wait_for("-- sending #1 big.bin");
    bob.wait_for("alice is sending big.bin");
    bob.type_line("a line from bob during the file");
    alice.type_line("a line from alice during the file");
    alice.wait_for("bob: a line from bob during the file");
    bob.wait_for("alice: a line from alice during the file");
    // A progress bar with rate and ETA, on both sides.
    let screen = bob.wait_for("ETA");
    assert!(
        screen.contains("< big.bin") && screen.contains("/s ETA"),
        "{screen}"
    );
    let screen = bob.wait_for("-- saved ./big.bin");
    // The lines went while the file was on its way, not after it.
    let saved = at(&screen, "-- saved ./big.bin");
    assert!(
        at(&screen, "alice is sending big.bin") < at(&screen, "alice: a line from alice during")
    );
    assert!(
        at(&screen, "alice: a line from alice during") < saved,
        "{screen}"
    );
    let screen = alice.wait_for("-- sent #1");
    assert!(
        at(&screen, "bob: a line from bob during") < at(&screen, "-- sent #1"),
        "{screen}"
    );
    assert!(
        screen.contains("#1> big.bin"),
        "a progress line for the sender:\n{screen}"
    );
    assert_eq!(sha256_of(&b.path().join("big.bin")), sum);
    assert!(
        screen.contains(&client::files::hex(&sum))
            || bob.screen().contains(&client::files::hex(&sum))
    );

    // Cancelled mid-way: bob is told, and keeps nothing of it.
    alice.type_line("/send other.bin");
    bob.wait_for("alice is sending other.bin");
    bob.wait_for("< other.bin");
    alice.type_line("/cancel");
    alice.wait_for("-- #2 not sent: cancelled");
    let screen = bob.wait_for("-- deleted other.bin from alice: cancelled by the sender");
    assert!(!screen.contains("saved ./other.bin"), "{screen}");
    assert_eq!(common::names_in(b.path()), ["big.bin"]);
    assert!(parts_in(b.path()).is_empty());
    // The chat carries on after it.
    alice.type_line("still here");
    bob.wait_for("alice: still here");
    // Ctrl-C cancels the files on their way, and leaves the chat open.
    alice.type_line("/send other.bin");
    alice.wait_for("-- sending #3 other.bin");
    bob.wait_for("-- deleted other.bin from alice: cancelled by the sender");
    wait_for_count(&bob, "alice is sending other.bin", 2);
    alice.keys(&["C-c"]);
    alice.wait_for("-- 1 file(s) cancelled (Ctrl-C again leaves)");
    wait_for_count(
        &bob,
        "-- deleted other.bin from alice: cancelled by the sender",
        2,
    );
    assert_eq!(common::names_in(b.path()), ["big.bin"]);
    alice.type_line("after ctrl-c");
    bob.wait_for("alice: after ctrl-c");

    // /send of what is not there is an error, not an exit.
    alice.type_line("/send \"no such file.bin\"");
    alice.wait_for("not sent: no such file.bin");
    alice.type_line("/bogus");
    alice.wait_for("/bogus: not a command here");

    alice.type_line("/quit");
    assert_eq!(alice.exit_code(), 0, "{}", alice.screen());
    bob.keys(&["C-d"]);
    assert_eq!(bob.exit_code(), 0, "{}", bob.screen());
}

#[test]
fn rooms_come_back_after_the_server_restarts_and_discovery_finds_it() {
    let mut server = Server::start(&[]);
    let (listen, discovery) = (server.addr.to_string(), server.discovery.to_string());
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = Terminal::run(
        a.path(),
        &[
            ringroom_path(),
            "chat",
            &listen,
            "lobby",
            "--name",
            "alice",
            "--heartbeat-ms",
            "500",
        ],
    );
    // Bob finds the server by discovery (on loopback: the port is this test's).
    let port = server.discovery.port().to_string();
    let bob = Terminal::run(
        b.path(),
        &[
            ringroom_path(),
            "chat",
            "--discover",
            "--discovery-port",
            &port,
            "lobby",
            "--name",
            "bob",
        ],
    );
    alice.wait_for("-- joined lobby");
    let screen = bob.wait_for("-- joined lobby");
    assert!(screen.contains("ringroom chat: found ringroom"), "{screen}");
    alice.type_line("/join second");
    alice.wait_for("-- joined second");
    bob.type_line("/join second");
    bob.wait_for("-- joined second");
    alice.type_line("/rooms");
    let screen = alice.wait_for("* second (joined)");
    assert!(screen.contains("  lobby (joined)"), "{screen}");

    server.kill();
    alice.wait_for("reconnecting in");
    bob.wait_for("reconnecting in");
    let _server = Server::start_at(&listen, &discovery, &[]);
    let screen = alice.wait_for("-- rejoined second");
    assert!(
        screen.contains("-- reconnected") && screen.contains("-- rejoined lobby"),
        "{screen}"
    );
    bob.wait_for("-- rejoined second");
    bob.wait_for("-- rejoined lobby");

    // Both rooms work again, the current one and the other.
    bob.type_line("back in second");
    alice.wait_for("[second] bob: back in second");
    bob.type_line("/room lobby");
    bob.type_line("back in lobby");
    alice.wait_for("[lobby] bob: back in lobby");
    // Leaving the current room moves to the other.
    alice.type_line("/leave");
    alice.wait_for("-- left second");
    alice.type_line("to lobby now");
    bob.wait_for("[lobby] alice: to lobby now");
    bob.type_line("/room second");
    bob.type_line("nobody hears this in second");
    bob.type_line("/quit");
    assert_eq!(bob.exit_code(), 0);
    assert!(!alice.screen().contains("nobody hears this"));
    alice.type_line("/quit");
    assert_eq!(alice.exit_code(), 0);
}
