//! `ringroom send` and `ringroom recv` as separate processes against a real
//! server: a 200 MB file to three receivers, one of them killed mid-way;
//! Ctrl-C on either side; names that are paths; files that exist already;
//! bodies in no format; and the exit codes scripts rely on.

mod common;

use std::path::Path;
use std::time::Duration;

use common::raw::RawPublisher;
use common::{
    names_in, output, random_file, ringroom, sha256_of, signal, wait_until, Proc, Server, TIMEOUT,
};

fn recv(server: &Server, dir: &Path, logs: &Path, tag: &str, extra: &[&str]) -> Proc {
    let mut c = ringroom();
    c.args(["recv", &server.target(), "drop", "--name", tag, "--dir"])
        .arg(dir)
        .args(extra);
    let p = Proc::spawn(c, logs, tag);
    wait_until(TIMEOUT, &format!("{tag} to join"), || {
        output(logs, tag).contains("-- joined drop")
    });
    p
}

fn send(server: &Server, file: &Path, logs: &Path, extra: &[&str]) -> Proc {
    let mut c = ringroom();
    c.args(["send", &server.target(), "drop", "--name", "sender"])
        .arg(file)
        .args(extra);
    Proc::spawn(c, logs, "send")
}

/// Bytes of the partial files in `dir`.
fn partial_bytes(dir: &Path) -> u64 {
    names_in(dir)
        .iter()
        .filter(|n| n.ends_with(".part"))
        .map(|n| std::fs::metadata(dir.join(n)).map_or(0, |m| m.len()))
        .sum()
}

#[test]
fn two_hundred_megabytes_to_three_receivers_and_one_is_killed_midway() {
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path();
    let file = logs.join("f200.bin");
    let sum = random_file(&file, 200_000_000);
    let dirs: Vec<_> = (0..3)
        .map(|i| {
            let d = logs.join(format!("r{i}"));
            std::fs::create_dir(&d).unwrap();
            d
        })
        .collect();
    let mut receivers: Vec<Proc> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| recv(&server, d, logs, &format!("r{i}"), &["--count", "1"]))
        .collect();
    // 40 MiB/s: about five seconds, time to kill one receiver on the way.
    let mut sender = send(&server, &file, logs, &["--rate", "40MiB"]);
    wait_until(TIMEOUT, "r0 to hold 20 MB", || {
        partial_bytes(&dirs[0]) > 20_000_000
    });
    signal(receivers[0].0.id(), "KILL");
    let killed_at = partial_bytes(&dirs[0]);
    assert!(
        killed_at < 200_000_000,
        "the kill came too late to be mid-way"
    );
    assert_eq!(
        sender.exit_code(TIMEOUT * 2),
        Some(0),
        "{}",
        output(logs, "send")
    );
    for i in 1..3 {
        let tag = format!("r{i}");
        assert_eq!(
            receivers[i].exit_code(TIMEOUT),
            Some(0),
            "{}",
            output(logs, &tag)
        );
        assert_eq!(names_in(&dirs[i]), ["f200.bin"]);
        assert_eq!(sha256_of(&dirs[i].join("f200.bin")), sum, "{tag}'s copy");
        assert!(output(logs, &tag)
            .contains(&format!("-- saved {}", dirs[i].join("f200.bin").display())));
    }
    // The killed one never renamed its partial file to the real name.
    assert_eq!(receivers[0].exit_code(TIMEOUT), None, "killed by a signal");
    assert!(!dirs[0].join("f200.bin").exists());
    // It could not delete its part either: the next receiver there does.
    assert!(partial_bytes(&dirs[0]) >= killed_at, "the part is left");
    let mut next = recv(&server, &dirs[0], logs, "r0-next", &[]);
    assert!(
        output(logs, "r0-next").contains("-- removed 1 partial file(s) left in"),
        "{}",
        output(logs, "r0-next")
    );
    assert!(names_in(&dirs[0]).is_empty(), "{:?}", names_in(&dirs[0]));
    signal(next.0.id(), "INT");
    assert_eq!(next.exit_code(TIMEOUT), Some(130));
    let out = output(logs, "send");
    assert!(
        out.contains("-- sending #1 f200.bin") && out.contains("-- sent #1"),
        "{out}"
    );
}

#[test]
fn several_files_go_at_once_on_their_own_streams() {
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path();
    let dir = logs.join("in");
    std::fs::create_dir(&dir).unwrap();
    let names = ["one.bin", "two.bin", "three.bin"];
    let sums: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| random_file(&logs.join(n), 4_000_000 + i))
        .collect();
    let mut r = recv(&server, &dir, logs, "r", &["--count", "3"]);
    let mut c = ringroom();
    c.args(["send", &server.target(), "drop", "--rate", "8MiB"])
        .args(names.iter().map(|n| logs.join(n)));
    let mut sender = Proc::spawn(c, logs, "send");
    assert_eq!(
        sender.exit_code(TIMEOUT),
        Some(0),
        "{}",
        output(logs, "send")
    );
    assert_eq!(r.exit_code(TIMEOUT), Some(0), "{}", output(logs, "r"));
    for (n, sum) in names.iter().zip(&sums) {
        assert_eq!(sha256_of(&dir.join(n)), *sum, "{n}");
    }
    // All three were on their way before the first was complete.
    let out = output(logs, "r");
    let first_saved = out.find("-- saved").unwrap();
    for n in names {
        let started = out.find(&format!("is sending {n}")).unwrap();
        assert!(started < first_saved, "{out}");
    }
}

#[test]
fn ctrl_c_on_the_sender_cancels_and_ctrl_c_on_a_receiver_deletes_its_part() {
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path();
    let file = logs.join("slow.bin");
    random_file(&file, 30_000_000);
    let (d1, d2) = (logs.join("d1"), logs.join("d2"));
    std::fs::create_dir(&d1).unwrap();
    std::fs::create_dir(&d2).unwrap();
    let mut r1 = recv(&server, &d1, logs, "r1", &["--count", "1"]);
    let mut r2 = recv(&server, &d2, logs, "r2", &[]);
    let mut sender = send(&server, &file, logs, &["--rate", "5MiB"]);
    wait_until(TIMEOUT, "both to hold 2 MB", || {
        partial_bytes(&d1) > 2_000_000 && partial_bytes(&d2) > 2_000_000
    });
    // The receiver interrupted: it deletes what it had and says 130.
    signal(r2.0.id(), "INT");
    assert_eq!(r2.exit_code(TIMEOUT), Some(130), "{}", output(logs, "r2"));
    assert_eq!(
        names_in(&d2),
        Vec::<String>::new(),
        "{}",
        output(logs, "r2")
    );
    // The sender interrupted: it cancels, the other receiver deletes.
    signal(sender.0.id(), "INT");
    assert_eq!(
        sender.exit_code(TIMEOUT),
        Some(130),
        "{}",
        output(logs, "send")
    );
    assert!(output(logs, "send").contains("interrupted; 1 transfer(s) cancelled"));
    assert_eq!(r1.exit_code(TIMEOUT), Some(1), "{}", output(logs, "r1"));
    assert!(
        output(logs, "r1").contains("-- deleted slow.bin from sender: cancelled by the sender"),
        "{}",
        output(logs, "r1")
    );
    assert_eq!(names_in(&d1), Vec::<String>::new());
}

#[test]
fn names_that_are_paths_are_refused_and_existing_files_are_never_overwritten() {
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path();
    let dir = logs.join("inbox");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "the original").unwrap();
    let mut r = recv(&server, &dir, logs, "r", &["--count", "9"]);
    let mut evil = RawPublisher::join(server.addr, "drop", "mallory");
    evil.publish(b"plain bytes, \x1b[31mno format\x1b[0m", 0, false);
    let tricks = [
        "../escape.txt",
        "/tmp/ringroom-absolute.txt",
        "..",
        "sub/dir.txt",
        "nul\0byte.txt",
        "\x1b]0;owned\x07title.txt",
    ];
    for name in tricks {
        evil.file(name, b"should not land anywhere", None);
    }
    evil.file("hello.txt", b"second", None);
    evil.file("hello.txt", b"third", None);
    evil.file("bad.bin", b"bytes whose trailer lies", Some([7; 32]));
    assert_eq!(r.exit_code(TIMEOUT), Some(1), "{}", output(logs, "r"));
    let out = output(logs, "r");
    assert_eq!(
        names_in(&dir),
        ["hello (1).txt", "hello (2).txt", "hello.txt"],
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hello.txt")).unwrap(),
        "the original"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hello (1).txt")).unwrap(),
        "second"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hello (2).txt")).unwrap(),
        "third"
    );
    assert!(!logs.join("escape.txt").exists());
    assert!(!Path::new("/tmp/ringroom-absolute.txt").exists());
    assert!(
        out.contains("-- not saved: ../escape.txt from mallory: refused: the name is a path"),
        "{out}"
    );
    assert!(out.contains(
        "-- not saved: /tmp/ringroom-absolute.txt from mallory: refused: the name is a path"
    ));
    assert!(out.contains("-- not saved: .. from mallory: refused: the name is . or .."));
    assert!(out.contains("refused: the name holds NUL"), "{out}");
    assert!(
        out.contains("refused: the name holds control characters"),
        "{out}"
    );
    assert!(
        out.contains("-- deleted bad.bin from mallory: SHA-256 mismatch"),
        "{out}"
    );
    // No escape sequence reaches the terminal: not from a body, not from a name.
    assert!(!out.contains('\x1b'), "{out:?}");
    assert!(out.contains("plain bytes, \\u{1b}[31mno format"), "{out}");
}

#[test]
fn exit_codes_say_what_happened() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path();
    let file = logs.join("f.bin");
    random_file(&file, 1000);
    let run = |args: &[&str]| {
        let out = ringroom().args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let f = file.to_str().unwrap();
    // Nothing listens there (a port just freed).
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (code, text) = run(&["send", &free, "drop", f]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("cannot connect"), "{text}");
    let (code, text) = run(&["send", &free, "drop"]);
    assert_eq!(
        (code, text.contains("no files given")),
        (Some(2), true),
        "{text}"
    );
    let (code, text) = run(&["recv", &free, "drop", "--dir", f]);
    assert_eq!(
        (code, text.contains("not a folder")),
        (Some(2), true),
        "{text}"
    );
    let (code, text) = run(&["chat", "only-a-room"]);
    assert_eq!(
        (code, text.contains("--discover")),
        (Some(2), true),
        "{text}"
    );
    let (code, _) = run(&["chat", "--bogus"]);
    assert_eq!(code, Some(1), "argh's own usage error");
    let quiet_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, text) = run(&[
        "discover",
        "--broadcast",
        "127.0.0.1",
        "--port",
        &quiet_port.to_string(),
        "--timeout",
        "300ms",
    ]);
    assert_eq!(
        (code, text.contains("no server answered")),
        (Some(3), true),
        "{text}"
    );

    let mut server = Server::start(&[]);
    let target = server.target();
    let (code, text) = run(&["send", &target, "drop", f, "/no/such/file"]);
    assert_eq!(
        (code, text.contains("/no/such/file")),
        (Some(1), true),
        "{text}"
    );
    // The server going away mid-send: 4, with what GOAWAY means.
    let big = logs.join("big.bin");
    random_file(&big, 20_000_000);
    let mut r = recv(&server, &logs.join("."), logs, "r", &[]);
    let mut sender = send(&server, &big, logs, &["--rate", "2MiB"]);
    wait_until(TIMEOUT, "the file to start", || {
        output(logs, "r").contains("is sending big.bin")
    });
    server.terminate();
    assert_eq!(
        sender.exit_code(TIMEOUT),
        Some(4),
        "{}",
        output(logs, "send")
    );
    let out = output(logs, "send");
    assert!(out.contains("server said goodbye, SHUTTING_DOWN"), "{out}");
    assert!(out.contains("#1 not sent"), "{out}");
    // The receiver keeps trying (it reconnects) and deleted its part.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        r.0.try_wait().unwrap().is_none(),
        "recv reconnects rather than exits"
    );
    assert!(
        !names_in(logs).iter().any(|n| n.ends_with(".part")),
        "{:?}",
        names_in(logs)
    );
    assert!(
        output(logs, "r").contains("-- deleted big.bin from sender"),
        "{}",
        output(logs, "r")
    );
}
