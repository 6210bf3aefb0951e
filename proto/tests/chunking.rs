//! Property tests: any sequence of valid frames, cut at any points and fed in
//! chunks of any sizes (half and sticky packets), decodes to the same frames;
//! and no input whatever makes the decoder panic.

use proptest::prelude::*;
use proto::{
    DecodeError, Decoder, ErrorCode, Fragment, Frame, Hello, Message, Publish, Room, Status,
    Welcome,
};

/// An owned frame, so that proptest can generate and shrink it.
#[derive(Clone, Debug)]
enum Owned {
    Hello(u32, String),
    Welcome(u64, u32, u32, u32, u16),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Join(String),
    Joined(String),
    Leave(String),
    Left(String),
    Publish(String, Vec<u8>, bool, Fragment),
    Message(u64, String, Vec<u8>, Fragment),
    Error(u16, String),
    GoAway(u16, String),
}

impl Owned {
    fn frame(&self) -> Frame<'_> {
        fn room(r: &str) -> Room<'_> {
            Room::new(r).unwrap()
        }
        match self {
            Owned::Hello(hb, name) => Frame::Hello(Hello {
                heartbeat_ms: *hb,
                name,
            }),
            Owned::Welcome(conn_id, hb, idle, max, shard) => Frame::Welcome(Welcome {
                conn_id: *conn_id,
                heartbeat_ms: *hb,
                idle_timeout_ms: *idle,
                max_payload: *max,
                shard: *shard,
            }),
            Owned::Ping(p) => Frame::Ping(p),
            Owned::Pong(p) => Frame::Pong(p),
            Owned::Join(r) => Frame::Join(room(r)),
            Owned::Joined(r) => Frame::Joined(room(r)),
            Owned::Leave(r) => Frame::Leave(room(r)),
            Owned::Left(r) => Frame::Left(room(r)),
            Owned::Publish(r, body, echo, fragment) => Frame::Publish(Publish {
                room: room(r),
                body,
                echo: *echo,
                fragment: *fragment,
            }),
            Owned::Message(from, r, body, fragment) => Frame::Message(Message {
                from_conn_id: *from,
                room: room(r),
                body,
                fragment: *fragment,
            }),
            Owned::Error(code, reason) => Frame::Error(Status {
                code: ErrorCode(*code),
                reason,
            }),
            Owned::GoAway(code, reason) => Frame::GoAway(Status {
                code: ErrorCode(*code),
                reason,
            }),
        }
    }
}

/// Up to 16 chars of up to 4 bytes: at most 64 bytes, never NUL.
fn short_text(min: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        any::<char>().prop_filter("no NUL", |c| *c != '\0'),
        min..=16,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn fragment() -> impl Strategy<Value = (Fragment, bool)> {
    prop_oneof![
        3 => Just((Fragment::default(), false)),
        1 => (1..=u16::MAX, any::<bool>()).prop_map(|(stream, more)| {
            (Fragment { stream, more, cancel: false }, false)
        }),
        1 => (1..=u16::MAX).prop_map(|stream| {
            (Fragment { stream, more: false, cancel: true }, true)
        }),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => proptest::collection::vec(any::<u8>(), 0..5000),
    ]
}

fn owned_frame() -> impl Strategy<Value = Owned> {
    let ping = proptest::collection::vec(any::<u8>(), 0..=64);
    prop_oneof![
        (any::<u32>(), short_text(0)).prop_map(|(hb, n)| Owned::Hello(hb, n)),
        any::<(u64, u32, u32, u32, u16)>()
            .prop_map(|(a, b, c, d, e)| Owned::Welcome(a, b, c, d, e)),
        ping.clone().prop_map(Owned::Ping),
        ping.prop_map(Owned::Pong),
        short_text(1).prop_map(Owned::Join),
        short_text(1).prop_map(Owned::Joined),
        short_text(1).prop_map(Owned::Leave),
        short_text(1).prop_map(Owned::Left),
        (short_text(1), body(), any::<bool>(), fragment()).prop_map(|(r, b, echo, (f, cancel))| {
            Owned::Publish(r, if cancel { vec![] } else { b }, echo, f)
        }),
        (any::<u64>(), short_text(1), body(), fragment()).prop_map(|(from, r, b, (f, cancel))| {
            Owned::Message(from, r, if cancel { vec![] } else { b }, f)
        }),
        (any::<u16>(), short_text(0)).prop_map(|(c, r)| Owned::Error(c, r)),
        (any::<u16>(), short_text(0)).prop_map(|(c, r)| Owned::GoAway(c, r)),
    ]
}

/// Splits `wire` into chunks whose sizes cycle through `cuts`.
fn chunks<'a>(wire: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = wire;
    for &cut in cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at(cut.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_chunking_decodes_the_same_frames(
        frames in proptest::collection::vec(owned_frame(), 1..40),
        cuts in proptest::collection::vec(1usize..300, 1..20),
    ) {
        let mut wire = Vec::new();
        for f in &frames {
            f.frame().encode_to_vec(&mut wire).unwrap();
        }
        let mut decoder = Decoder::new(1 << 20);
        let mut next = 0;
        for mut chunk in chunks(&wire, &cuts) {
            while let Some(got) = decoder.decode(&mut chunk).unwrap() {
                prop_assert!(next < frames.len(), "more frames than were sent");
                prop_assert_eq!(got, frames[next].frame());
                next += 1;
            }
            prop_assert!(chunk.is_empty());
            decoder.release_idle_buffer();
        }
        prop_assert_eq!(next, frames.len());
        prop_assert!(!decoder.is_mid_frame());
    }

    #[test]
    fn garbage_never_panics_and_errors_stick(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(1usize..64, 1..8),
        max in 0u32..4096,
    ) {
        let mut decoder = Decoder::new(max);
        let mut first_error: Option<DecodeError> = None;
        for mut chunk in chunks(&bytes, &cuts) {
            loop {
                match decoder.decode(&mut chunk) {
                    Ok(Some(frame)) => {
                        // Whatever decodes re-encodes within the limit.
                        prop_assert!(frame.payload_len() as u64 <= u64::from(max));
                        let mut out = Vec::new();
                        frame.encode_to_vec(&mut out).unwrap();
                    }
                    Ok(None) => break,
                    Err(e) => {
                        if let Some(first) = first_error {
                            prop_assert_eq!(e, first);
                        }
                        first_error = Some(e);
                        break;
                    }
                }
            }
            // Carry-over never exceeds the maximum payload.
            prop_assert!(decoder.buffered_capacity() <= max as usize + Decoder::CARRY_RECORD_BYTES);
        }
    }
}
