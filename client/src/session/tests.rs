//! The session on a simulated clock.

use super::*;
use proto::{Decoder, Status};

const MS: Duration = Duration::from_millis(1);

fn welcome(heartbeat_ms: u32) -> Frame<'static> {
    Frame::Welcome(Welcome {
        conn_id: 7,
        heartbeat_ms,
        idle_timeout_ms: 3 * heartbeat_ms,
        max_payload: 65_536,
        shard: 0,
    })
}

/// The frame types in what the session wrote.
fn sent(s: &mut Session) -> Vec<String> {
    let bytes = s.take_output();
    let mut d = Decoder::new(1 << 16);
    let mut input = &bytes[..];
    let mut out = Vec::new();
    while let Some(f) = d.decode(&mut input).unwrap() {
        out.push(match f {
            Frame::Join(r) => format!("JOIN {}", r.as_str()),
            Frame::Leave(r) => format!("LEAVE {}", r.as_str()),
            Frame::Hello(h) => format!("HELLO {}", h.name),
            other => other.frame_type().name().to_string(),
        });
    }
    out
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn up(t0: Instant, rooms: &[&str]) -> Session {
    let mut s = Session::new(
        Config {
            name: "alice".into(),
            ..Config::default()
        },
        t0,
        1,
    );
    for r in rooms {
        s.join(r).unwrap();
    }
    assert_eq!(s.poll_action(t0), Some(Action::Connect));
    s.on_connected(t0);
    s.on_frame(t0, welcome(1000));
    for r in rooms {
        s.on_frame(t0, Frame::Joined(Room::new(r).unwrap()));
    }
    s
}

#[test]
fn hello_then_joins_then_pings_at_the_granted_interval() {
    let t0 = Instant::now();
    let mut s = up(t0, &["lobby"]);
    assert_eq!(sent(&mut s), ["HELLO alice", "JOIN lobby"]);
    assert!(matches!(
        events(&mut s)[..],
        [
            Event::Welcomed { again: false, .. },
            Event::Joined { again: false, .. }
        ]
    ));
    assert_eq!(s.next_deadline(), Some(t0 + 1000 * MS));
    assert_eq!(s.poll_action(t0 + 999 * MS), None);
    assert!(sent(&mut s).is_empty());
    assert_eq!(s.poll_action(t0 + 1000 * MS), None);
    assert_eq!(sent(&mut s), ["PING"]);
    s.on_frame(t0 + 1001 * MS, Frame::Ping(b"x"));
    assert_eq!(sent(&mut s), ["PONG"], "a server's PING is answered");
}

#[test]
fn a_silent_server_is_dead_after_its_idle_timeout_then_reconnect_and_rejoin() {
    let t0 = Instant::now();
    let mut s = up(t0, &["a", "b"]);
    sent(&mut s);
    events(&mut s);
    // PINGs go out, nothing comes back.
    for t in (1000..3000).step_by(500) {
        assert_eq!(s.poll_action(t0 + t * MS), None);
    }
    assert_eq!(s.poll_action(t0 + 3000 * MS), Some(Action::Close));
    s.on_closed(t0 + 3000 * MS, "closed by us".into());
    let ev = events(&mut s);
    let Event::Lost {
        why: Lost::Silent(idle),
        retry_in: Some(delay),
    } = ev[0].clone()
    else {
        panic!("{ev:?}")
    };
    assert_eq!(idle, 3000 * MS);
    assert!((100 * MS..=200 * MS).contains(&delay), "{delay:?}");
    assert!(!s.is_joined("a"));
    let t1 = t0 + 3000 * MS + delay;
    assert_eq!(s.poll_action(t1 - MS), None);
    assert_eq!(s.poll_action(t1), Some(Action::Connect));
    s.on_connected(t1);
    assert_eq!(sent(&mut s), ["HELLO alice", "JOIN a", "JOIN b"]);
    s.on_frame(t1, welcome(1000));
    s.on_frame(t1, Frame::Joined(Room::new("a").unwrap()));
    s.on_frame(t1, Frame::Joined(Room::new("b").unwrap()));
    let ev = events(&mut s);
    assert!(
        matches!(ev[0], Event::Welcomed { again: true, .. }),
        "{ev:?}"
    );
    assert_eq!(
        ev[1..],
        [
            Event::Joined {
                room: "a".into(),
                again: true
            },
            Event::Joined {
                room: "b".into(),
                again: true
            }
        ]
    );
}

#[test]
fn backoff_doubles_is_jittered_and_capped() {
    let t0 = Instant::now();
    let mut s = Session::new(Config::default(), t0, 42);
    let mut t = t0;
    let mut delays = Vec::new();
    for _ in 0..10 {
        assert_eq!(s.poll_action(t), Some(Action::Connect));
        s.on_connect_failed(t, "refused".into());
        let Some(Event::ConnectFailed {
            retry_in: Some(d), ..
        }) = s.poll_event()
        else {
            panic!()
        };
        delays.push(d);
        t += d;
    }
    for (i, d) in delays.iter().enumerate() {
        let full = (200 * MS * (1 << i)).min(Duration::from_secs(10));
        assert!(
            *d >= full / 2 && *d <= full,
            "attempt {i}: {d:?} vs {full:?}"
        );
    }
    // Many clients cut off at once spread out: 1,000 sessions' first delays.
    let firsts: Vec<Duration> = (0..1000)
        .map(|seed| Session::new(Config::default(), t0, seed).backoff())
        .collect();
    let under_150 = firsts.iter().filter(|d| **d < 150 * MS).count();
    assert!(
        (350..650).contains(&under_150),
        "{under_150} of 1000 in the lower half"
    );
}

#[test]
fn a_welcome_resets_the_backoff() {
    let t0 = Instant::now();
    let mut s = up(t0, &[]);
    s.on_closed(t0, "reset".into());
    let Some(Event::Lost {
        retry_in: Some(d), ..
    }) = events(&mut s).pop()
    else {
        panic!()
    };
    assert!(d <= 200 * MS);
}

#[test]
fn no_welcome_in_time_closes() {
    let t0 = Instant::now();
    let mut s = Session::new(Config::default(), t0, 1);
    s.poll_action(t0);
    s.on_connected(t0);
    assert_eq!(s.poll_action(t0 + 4999 * MS), None);
    assert_eq!(s.poll_action(t0 + 5000 * MS), Some(Action::Close));
    s.on_closed(t0 + 5000 * MS, String::new());
    assert!(matches!(
        events(&mut s)[..],
        [Event::Lost {
            why: Lost::NoWelcome,
            retry_in: Some(_)
        }]
    ));
}

#[test]
fn fatal_errors_and_goaway_are_what_the_loss_reports() {
    let t0 = Instant::now();
    let mut s = up(t0, &[]);
    events(&mut s);
    s.on_frame(
        t0,
        Frame::Error(Status {
            code: ErrorCode::SLOW_CONSUMER,
            reason: "too slow",
        }),
    );
    s.on_closed(t0, "eof".into());
    assert!(matches!(
        &events(&mut s)[..],
        [Event::Lost { why: Lost::Error(ErrorCode::SLOW_CONSUMER, r), retry_in: Some(_) }] if r == "too slow"
    ));

    let mut s = up(t0, &[]);
    events(&mut s);
    s.on_frame(
        t0,
        Frame::Error(Status {
            code: ErrorCode::MALFORMED,
            reason: "bad",
        }),
    );
    s.on_closed(t0, "eof".into());
    assert!(
        matches!(&events(&mut s)[..], [Event::Lost { retry_in: None, .. }]),
        "our own broken frames are not retried"
    );
    assert!(s.is_over());

    let mut s = up(t0, &[]);
    events(&mut s);
    s.on_frame(
        t0,
        Frame::GoAway(Status {
            code: ErrorCode::SHUTTING_DOWN,
            reason: "bye",
        }),
    );
    s.on_closed(t0, "eof".into());
    assert!(matches!(
        &events(&mut s)[..],
        [Event::Lost {
            why: Lost::GoAway(ErrorCode::SHUTTING_DOWN, _),
            retry_in: Some(_)
        }]
    ));
}

#[test]
fn a_join_refused_for_the_room_limit_drops_that_room() {
    let t0 = Instant::now();
    let mut s = up(t0, &["a"]);
    events(&mut s);
    s.join("b").unwrap();
    s.join("c").unwrap();
    s.on_frame(
        t0,
        Frame::Error(Status {
            code: ErrorCode::LIMIT,
            reason: "this connection is in its maximum number of rooms",
        }),
    );
    s.on_frame(t0, Frame::Joined(Room::new("c").unwrap()));
    let ev = events(&mut s);
    assert!(
        matches!(&ev[0], Event::JoinRefused { room, .. } if room == "b"),
        "{ev:?}"
    );
    let rooms: Vec<_> = s.rooms().collect();
    assert_eq!(rooms, [("a", true), ("c", true)]);
}

#[test]
fn leave_forgets_the_room_across_reconnects() {
    let t0 = Instant::now();
    let mut s = up(t0, &["a", "b"]);
    sent(&mut s);
    s.leave("a").unwrap();
    assert_eq!(sent(&mut s), ["LEAVE a"]);
    s.on_closed(t0, "gone".into());
    let t1 = t0 + Duration::from_secs(1);
    s.poll_action(t1);
    s.on_connected(t1);
    assert_eq!(sent(&mut s), ["HELLO alice", "JOIN b"]);
    assert!(s.join("").is_err(), "room names are checked");
}

#[test]
fn stop_ends_the_session() {
    let t0 = Instant::now();
    let mut s = up(t0, &[]);
    s.stop();
    s.on_closed(t0, "eof".into());
    assert!(s.is_over());
    assert_eq!(s.poll_action(t0 + Duration::from_secs(60)), None);
}
