//! Reassembly into a real temporary folder, fragments fed by hand.

use super::*;
use crate::files::outgoing::OutgoingFile;
use proto::{Decoder, Frame};

/// The fragments of `data` sent as a file named `name`, as (fragment, body).
fn stream(name: &str, data: &[u8], stream: u16) -> Vec<(Fragment, Vec<u8>)> {
    let mut f = OutgoingFile::from_reader(
        Box::new(std::io::Cursor::new(data.to_vec())),
        data.len() as u64,
        name,
        1,
        stream,
        "room",
        "bob",
    );
    let mut wire = Vec::new();
    while !f.is_done() {
        f.next_fragment(1000, &mut wire).unwrap();
    }
    let mut d = Decoder::new(1 << 16);
    let mut input = &wire[..];
    let mut out = Vec::new();
    while let Some(Frame::Publish(p)) = d.decode(&mut input).unwrap() {
        out.push((p.fragment, p.body.to_vec()));
    }
    out
}

fn feed(inb: &mut Inbound, from: u64, frags: &[(Fragment, Vec<u8>)]) -> Vec<Incoming> {
    frags
        .iter()
        .filter_map(|(f, b)| inb.on_fragment(from, "room", *f, b))
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn interleaved_streams_reassemble_each_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut inb = Inbound::new(Some(dir.path().into()), Limits::default());
    let (a, b, c) = (data(10_000, 1), data(3_500, 2), data(0, 3));
    let sa = stream("a.bin", &a, 1);
    let sb = stream("b.bin", &b, 2);
    // The same stream id from another publisher is another stream.
    let sc = stream("c.bin", &c, 1);
    let mut events = Vec::new();
    let longest = sa.len().max(sb.len()).max(sc.len());
    for i in 0..longest {
        for (from, s) in [(10, &sa), (10, &sb), (11, &sc)] {
            if let Some((f, body)) = s.get(i) {
                events.extend(inb.on_fragment(from, "room", *f, body));
            }
        }
    }
    let saved: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Incoming::Saved { key, path, .. } => Some((*key, path.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(saved.len(), 3, "{events:?}");
    assert_eq!(std::fs::read(dir.path().join("a.bin")).unwrap(), a);
    assert_eq!(std::fs::read(dir.path().join("b.bin")).unwrap(), b);
    assert_eq!(std::fs::read(dir.path().join("c.bin")).unwrap(), c);
    assert_eq!(
        files_in(dir.path()),
        ["a.bin", "b.bin", "c.bin"],
        "no temporary left"
    );
    assert!(inb.progress().is_empty());
}

#[test]
fn cancel_deletes_the_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut inb = Inbound::new(Some(dir.path().into()), Limits::default());
    let s = stream("big.bin", &data(50_000, 0), 5);
    let events = feed(&mut inb, 1, &s[..10]);
    assert!(
        matches!(&events[..], [Incoming::Started { file_name, size: 50_000, .. }] if file_name == "big.bin")
    );
    assert_eq!(inb.progress()[0].received, 9 * 995);
    assert_eq!(files_in(dir.path()).len(), 1, "the temporary");
    let cancel = Fragment {
        stream: 5,
        more: false,
        cancel: true,
    };
    let ev = inb.on_fragment(1, "room", cancel, b"");
    assert!(
        matches!(
            ev,
            Some(Incoming::Discarded {
                why: Discard::Cancelled,
                ..
            })
        ),
        "{ev:?}"
    );
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn a_checksum_mismatch_deletes_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut inb = Inbound::new(Some(dir.path().into()), Limits::default());
    let mut s = stream("x.bin", &data(5_000, 0), 1);
    s[2].1[17] ^= 1; // one bit flipped in transit
    let events = feed(&mut inb, 1, &s);
    match events.last().unwrap() {
        Incoming::Discarded {
            why: Discard::ChecksumMismatch { expected, actual },
            ..
        } => assert_ne!(expected, actual),
        other => panic!("{other:?}"),
    }
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn a_size_that_lies_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut inb = Inbound::new(Some(dir.path().into()), Limits::default());
    let mut s = stream("x.bin", &data(5_000, 0), 1);
    s.remove(3); // a fragment short
    let events = feed(&mut inb, 1, &s);
    assert!(matches!(
        events.last(),
        Some(Incoming::Discarded {
            why: Discard::SizeMismatch {
                expected: 5_000,
                ..
            },
            ..
        })
    ));
    // One more fragment than announced: refused as soon as it overflows.
    let mut s = stream("y.bin", &data(2_000, 0), 2);
    let extra = s[1].clone();
    s.insert(2, extra);
    let events = feed(&mut inb, 1, &s);
    assert!(
        matches!(
            events.last(),
            Some(Incoming::Discarded {
                why: Discard::SizeMismatch { .. },
                ..
            })
        ),
        "{events:?}"
    );
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn path_tricks_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("in");
    std::fs::create_dir(&inner).unwrap();
    let mut inb = Inbound::new(Some(inner.clone()), Limits::default());
    for name in ["../escape.txt", "/etc/passwd", "..", "a\0b", "sub/dir.txt"] {
        let events = feed(&mut inb, 1, &stream(name, b"evil", 1));
        assert!(
            matches!(
                &events[..],
                [Incoming::Discarded {
                    why: Discard::Refused(_),
                    ..
                }]
            ),
            "{name}: {events:?}"
        );
    }
    assert!(files_in(&inner).is_empty());
    assert_eq!(files_in(dir.path()), ["in"]);
}

#[test]
fn an_existing_file_gets_a_suffix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let mut inb = Inbound::new(Some(dir.path().into()), Limits::default());
    let events = feed(&mut inb, 1, &stream("notes.txt", b"theirs", 1));
    assert!(
        matches!(events.last(), Some(Incoming::Saved { path, .. }) if path.ends_with("notes (1).txt"))
    );
    assert_eq!(
        std::fs::read(dir.path().join("notes.txt")).unwrap(),
        b"mine"
    );
    assert_eq!(
        std::fs::read(dir.path().join("notes (1).txt")).unwrap(),
        b"theirs"
    );
}

#[test]
fn limits_refuse_and_skip_the_rest_of_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_transfers: 1,
        max_file_bytes: 4_000,
    };
    let mut inb = Inbound::new(Some(dir.path().into()), limits);
    let events = feed(&mut inb, 1, &stream("big", &data(5_000, 0), 1));
    assert!(
        matches!(
            &events[..],
            [Incoming::Discarded {
                why: Discard::TooLarge,
                ..
            }]
        ),
        "{events:?}"
    );
    let first = stream("one", &data(3_000, 0), 1);
    let second = stream("two", &data(3_000, 0), 2);
    feed(&mut inb, 1, &first[..2]);
    let events = feed(&mut inb, 1, &second);
    assert!(
        matches!(
            &events[..],
            [Incoming::Discarded {
                why: Discard::TooMany,
                ..
            }]
        ),
        "{events:?}"
    );
    let events = feed(&mut inb, 1, &first[2..]);
    assert!(matches!(&events[..], [Incoming::Saved { .. }]));
    assert_eq!(files_in(dir.path()), ["one"]);

    let mut none = Inbound::new(None, Limits::default());
    let events = feed(&mut none, 1, &stream("f", b"x", 1));
    assert!(matches!(
        &events[..],
        [Incoming::Discarded {
            why: Discard::NotAccepting,
            ..
        }]
    ));
}

#[test]
fn a_lost_connection_deletes_every_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut inb = Inbound::new(Some(dir.path().into()), Limits::default());
    feed(&mut inb, 1, &stream("a", &data(9_000, 0), 1)[..3]);
    feed(&mut inb, 2, &stream("b", &data(9_000, 0), 1)[..3]);
    assert_eq!(files_in(dir.path()).len(), 2);
    let events = inb.on_disconnect();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| matches!(
        e,
        Incoming::Discarded {
            why: Discard::ConnectionLost,
            ..
        }
    )));
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn another_clients_stream_is_counted_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut inb = Inbound::new(Some(dir.path().into()), Limits::default());
    let more = |m| Fragment {
        stream: 9,
        more: m,
        cancel: false,
    };
    assert_eq!(inb.on_fragment(1, "r", more(true), b"raw bytes "), None);
    let ev = inb.on_fragment(1, "r", more(false), b"end");
    assert_eq!(
        ev,
        Some(Incoming::Raw {
            key: (1, 9),
            bytes: 13,
            cancelled: false
        })
    );
    assert!(files_in(dir.path()).is_empty());
}
