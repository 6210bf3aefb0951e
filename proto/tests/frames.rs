//! Every frame type, field limit and error code of PROTOCOL.md, byte for byte.

use proto::{
    flags, DecodeError, Decoder, EncodeError, ErrorCode, Field, Fragment, Frame, FrameType, Header,
    Hello, Malformed, Message, Publish, Room, Status, Welcome, DEFAULT_MAX_PAYLOAD,
};

/// Decodes `wire` fed whole; every frame re-encoded, or the error.
fn decode_all(wire: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
    let mut input = wire;
    let mut out = Vec::new();
    while let Some(frame) = decoder.decode(&mut input)? {
        let mut bytes = Vec::new();
        frame.encode_to_vec(&mut bytes).unwrap();
        out.push(bytes);
    }
    assert!(!decoder.is_mid_frame(), "input ended mid-frame");
    Ok(out)
}

/// Decodes exactly one frame from `wire` and checks it equals `expect`.
fn assert_decodes_to(wire: &[u8], expect: Frame<'_>) {
    let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
    let mut input = wire;
    assert_eq!(decoder.decode(&mut input), Ok(Some(expect)));
    assert!(input.is_empty());
    assert_eq!(decoder.decode(&mut input), Ok(None));
}

/// The first error decoding `wire` gives.
fn decode_err(wire: &[u8]) -> DecodeError {
    decode_all(wire).expect_err("frame should have been refused")
}

fn malformed(wire: &[u8]) -> Malformed {
    match decode_err(wire) {
        DecodeError::Malformed(m) => m,
        other => panic!("expected MALFORMED, got {other:?}"),
    }
}

/// A raw frame: header fields and payload, as a peer might send it.
fn raw(ty: u8, flag_bits: u8, stream: u16, payload: &[u8]) -> Vec<u8> {
    let header = Header {
        len: payload.len() as u32,
        ty,
        flags: flag_bits,
        stream,
    };
    let mut out = header.to_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

fn room(s: &str) -> Room<'_> {
    Room::new(s).unwrap()
}

fn encode(frame: Frame<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let n = frame.encode_to_vec(&mut out).unwrap();
    assert_eq!(n, out.len());
    assert_eq!(n, frame.encoded_len());
    out
}

// ---- every frame type, against bytes written out from PROTOCOL.md ----

#[test]
fn hello_bytes() {
    let frame = Frame::Hello(Hello {
        heartbeat_ms: 5000,
        name: "bob",
    });
    let wire = encode(frame);
    assert_eq!(
        wire,
        [0, 0, 0, 9, 0x01, 0, 0, 0, 0, 1, 0, 0, 0x13, 0x88, b'b', b'o', b'b']
    );
    assert_decodes_to(&wire, frame);
}

#[test]
fn welcome_bytes() {
    let frame = Frame::Welcome(Welcome {
        conn_id: 0x0102_0304_0506_0708,
        heartbeat_ms: 10_000,
        idle_timeout_ms: 30_000,
        max_payload: 65_536,
        shard: 3,
    });
    let wire = encode(frame);
    let mut expect = vec![0, 0, 0, 22, 0x02, 0, 0, 0];
    expect.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    expect.extend_from_slice(&10_000u32.to_be_bytes());
    expect.extend_from_slice(&30_000u32.to_be_bytes());
    expect.extend_from_slice(&65_536u32.to_be_bytes());
    expect.extend_from_slice(&[0, 3]);
    assert_eq!(wire, expect);
    assert_decodes_to(&wire, frame);
}

#[test]
fn ping_and_pong_bytes() {
    assert_eq!(
        encode(Frame::Ping(b"xy")),
        [0, 0, 0, 2, 0x03, 0, 0, 0, b'x', b'y']
    );
    assert_eq!(
        encode(Frame::Pong(b"xy")),
        [0, 0, 0, 2, 0x04, 0, 0, 0, b'x', b'y']
    );
    assert_eq!(encode(Frame::Ping(b"")), [0, 0, 0, 0, 0x03, 0, 0, 0]);
    for len in 0..=64 {
        let payload: Vec<u8> = (0..len as u8).collect();
        assert_decodes_to(&encode(Frame::Ping(&payload)), Frame::Ping(&payload));
        assert_decodes_to(&encode(Frame::Pong(&payload)), Frame::Pong(&payload));
    }
}

#[test]
fn room_frames_bytes() {
    type MakeFrame = fn(Room<'static>) -> Frame<'static>;
    let cases: [(MakeFrame, u8); 4] = [
        (Frame::Join, 0x10),
        (Frame::Joined, 0x11),
        (Frame::Leave, 0x12),
        (Frame::Left, 0x13),
    ];
    for (make, code) in cases {
        let frame = make(room("lobby"));
        let wire = encode(frame);
        assert_eq!(wire, raw(code, 0, 0, b"lobby"));
        assert_decodes_to(&wire, frame);
    }
}

#[test]
fn publish_bytes() {
    let frame = Frame::Publish(Publish {
        room: room("ab"),
        body: b"hello",
        echo: true,
        fragment: Fragment::default(),
    });
    let wire = encode(frame);
    assert_eq!(
        wire,
        raw(
            0x20,
            flags::ECHO,
            0,
            &[2, b'a', b'b', b'h', b'e', b'l', b'l', b'o']
        )
    );
    assert_decodes_to(&wire, frame);
}

#[test]
fn message_bytes() {
    let frame = Frame::Message(Message {
        from_conn_id: 42,
        room: room("ab"),
        body: b"hi",
        fragment: Fragment {
            stream: 7,
            more: true,
            cancel: false,
        },
    });
    let wire = encode(frame);
    let mut payload = 42u64.to_be_bytes().to_vec();
    payload.extend_from_slice(&[2, b'a', b'b', b'h', b'i']);
    assert_eq!(wire, raw(0x21, flags::MORE, 7, &payload));
    assert_decodes_to(&wire, frame);
}

#[test]
fn error_and_goaway_bytes() {
    let status = Status {
        code: ErrorCode::SLOW_CONSUMER,
        reason: "slow",
    };
    let wire = encode(Frame::Error(status));
    assert_eq!(wire, raw(0x7E, 0, 0, &[0, 6, b's', b'l', b'o', b'w']));
    assert_decodes_to(&wire, Frame::Error(status));
    let bye = Status {
        code: ErrorCode::SHUTTING_DOWN,
        reason: "",
    };
    let wire = encode(Frame::GoAway(bye));
    assert_eq!(wire, raw(0x7F, 0, 0, &[0, 8]));
    assert_decodes_to(&wire, Frame::GoAway(bye));
}

#[test]
fn unknown_error_codes_are_kept() {
    let wire = raw(0x7E, 0, 0, &[0x12, 0x34, b'?']);
    assert_decodes_to(
        &wire,
        Frame::Error(Status {
            code: ErrorCode(0x1234),
            reason: "?",
        }),
    );
}

#[test]
fn stream_fragments_and_cancel() {
    let first = Frame::Publish(Publish {
        room: room("files"),
        body: &[1; 100],
        echo: false,
        fragment: Fragment {
            stream: 9,
            more: true,
            cancel: false,
        },
    });
    let last = Frame::Publish(Publish {
        room: room("files"),
        body: &[2; 10],
        echo: false,
        fragment: Fragment {
            stream: 9,
            more: false,
            cancel: false,
        },
    });
    let cancel = Frame::Publish(Publish {
        room: room("files"),
        body: b"",
        echo: false,
        fragment: Fragment {
            stream: 9,
            more: false,
            cancel: true,
        },
    });
    let mut wire = encode(first);
    wire.extend(encode(last));
    wire.extend(encode(cancel));
    let frames = decode_all(&wire).unwrap();
    assert_eq!(frames, [encode(first), encode(last), encode(cancel)]);
}

#[test]
fn frame_types_round_trip_their_codes() {
    for ty in FrameType::ALL {
        assert_eq!(FrameType::from_u8(ty as u8), Some(ty));
    }
    let known: Vec<u8> = FrameType::ALL.iter().map(|t| *t as u8).collect();
    for code in 0..=255u8 {
        assert_eq!(FrameType::from_u8(code).is_some(), known.contains(&code));
    }
}

// ---- header-level errors: found from the 8 header bytes alone ----

#[test]
fn over_size_len_is_refused_from_the_header_alone() {
    let mut decoder = Decoder::new(1000);
    // Only the header: no payload follows, and none is waited for.
    let header = Header {
        len: 1001,
        ty: 0x20,
        flags: 0,
        stream: 0,
    }
    .to_bytes();
    let mut input = &header[..];
    assert_eq!(
        decoder.decode(&mut input),
        Err(DecodeError::FrameTooLarge {
            len: 1001,
            max: 1000
        })
    );
    assert_eq!(decoder.buffered_capacity(), 0, "nothing allocated for it");
    assert_eq!(
        DecodeError::FrameTooLarge {
            len: 1001,
            max: 1000
        }
        .code(),
        ErrorCode::FRAME_TOO_LARGE
    );
    // Even a huge len, and even one cut mid-header.
    let mut decoder = Decoder::new(1000);
    let header = [0xFF, 0xFF, 0xFF, 0xFF, 0x20, 0, 0, 0];
    let mut first: &[u8] = &header[..3];
    assert_eq!(decoder.decode(&mut first), Ok(None));
    let mut second: &[u8] = &header[3..];
    assert!(matches!(
        decoder.decode(&mut second),
        Err(DecodeError::FrameTooLarge { len: u32::MAX, .. })
    ));
}

#[test]
fn max_payload_is_inclusive_and_settable() {
    let body = vec![0u8; 998];
    let frame = Frame::Publish(Publish {
        room: room("r"),
        body: &body,
        echo: false,
        fragment: Fragment::default(),
    });
    let wire = encode(frame);
    assert_eq!(frame.payload_len(), 1000);
    let mut decoder = Decoder::new(1000);
    let mut input = &wire[..];
    assert_eq!(decoder.decode(&mut input), Ok(Some(frame)));

    let mut decoder = Decoder::new(999);
    assert_eq!(decoder.max_payload(), 999);
    let mut input = &wire[..];
    assert!(matches!(
        decoder.decode(&mut input),
        Err(DecodeError::FrameTooLarge {
            len: 1000,
            max: 999
        })
    ));
    let mut decoder = Decoder::new(10);
    decoder.set_max_payload(1000);
    let mut input = &wire[..];
    assert_eq!(decoder.decode(&mut input), Ok(Some(frame)));
}

#[test]
fn unknown_type_is_refused_from_the_header_alone() {
    for ty in [0x00, 0x05, 0x14, 0x22, 0x7D, 0x80, 0xFF] {
        let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
        // len 100, but only the header is there.
        let header = Header {
            len: 100,
            ty,
            flags: 0,
            stream: 0,
        }
        .to_bytes();
        let mut input = &header[..];
        let err = decoder.decode(&mut input).unwrap_err();
        assert_eq!(err, DecodeError::UnknownType(ty));
        assert_eq!(err.code(), ErrorCode::UNKNOWN_TYPE);
    }
}

#[test]
fn reserved_flag_bits_are_malformed() {
    for bit in 3..8 {
        let m = malformed(&raw(0x03, 1 << bit, 0, b""));
        assert_eq!(m, Malformed::ReservedFlags { flags: 1 << bit });
    }
    assert_eq!(
        decode_err(&raw(0x03, 0x80, 0, b"")).code(),
        ErrorCode::MALFORMED
    );
}

#[test]
fn flags_and_streams_only_where_they_belong() {
    // MORE, ECHO and CANCEL on a type that carries none of them.
    for ty in [0x01, 0x03, 0x04, 0x10, 0x7E] {
        for f in [flags::MORE, flags::ECHO, flags::CANCEL] {
            let m = malformed(&raw(ty, f, 1, b"\0\0\0\0\0\0\0\0"));
            assert!(
                matches!(m, Malformed::FlagsNotAllowed { .. }),
                "{ty:#x} {f}: {m:?}"
            );
        }
    }
    // ECHO is PUBLISH's only.
    let mut msg = 1u64.to_be_bytes().to_vec();
    msg.extend_from_slice(&[1, b'r']);
    assert!(matches!(
        malformed(&raw(0x21, flags::ECHO, 0, &msg)),
        Malformed::FlagsNotAllowed {
            ty: FrameType::Message,
            ..
        }
    ));
    // A stream id on a frame that is never streamed.
    assert_eq!(
        malformed(&raw(0x10, 0, 5, b"room")),
        Malformed::StreamNotAllowed {
            ty: FrameType::Join,
            stream: 5
        }
    );
    // MORE or CANCEL on stream 0, both together, CANCEL with a body.
    assert_eq!(
        malformed(&raw(0x20, flags::MORE, 0, b"\x01r")),
        Malformed::FragmentWithoutStream
    );
    assert_eq!(
        malformed(&raw(0x20, flags::CANCEL, 0, b"\x01r")),
        Malformed::FragmentWithoutStream
    );
    assert_eq!(
        malformed(&raw(0x20, flags::CANCEL | flags::MORE, 3, b"\x01r")),
        Malformed::CancelWithMore
    );
    assert_eq!(
        malformed(&raw(0x20, flags::CANCEL, 3, b"\x01rX")),
        Malformed::CancelWithBody
    );
    let mut msg = 1u64.to_be_bytes().to_vec();
    msg.extend_from_slice(&[1, b'r', b'X']);
    assert_eq!(
        malformed(&raw(0x21, flags::CANCEL, 3, &msg)),
        Malformed::CancelWithBody
    );
    // A stream with no flags is simply the last (or only) fragment.
    assert!(decode_all(&raw(0x20, 0, 3, b"\x01rX")).is_ok());
}

// ---- field limits ----

#[test]
fn hello_limits() {
    let name64 = "n".repeat(64);
    let mut payload = vec![0, 1, 0, 0, 0, 0];
    payload.extend_from_slice(name64.as_bytes());
    assert_decodes_to(
        &raw(0x01, 0, 0, &payload),
        Frame::Hello(Hello {
            heartbeat_ms: 0,
            name: &name64,
        }),
    );
    payload.push(b'n');
    assert_eq!(
        malformed(&raw(0x01, 0, 0, &payload)),
        Malformed::Length {
            ty: FrameType::Hello,
            len: 71
        }
    );
    assert!(matches!(
        malformed(&raw(0x01, 0, 0, &[0, 1, 0, 0, 0])),
        Malformed::Length { len: 5, .. }
    ));
    assert_eq!(
        malformed(&raw(0x01, 0, 0, &[0, 2, 0, 0, 0, 0])),
        Malformed::Version { version: 2 }
    );
    assert_eq!(
        malformed(&raw(0x01, 0, 0, &[0, 1, 0, 0, 0, 0, 0xFF])),
        Malformed::Utf8 { field: Field::Name }
    );
    assert_eq!(
        malformed(&raw(0x01, 0, 0, &[0, 1, 0, 0, 0, 0, b'a', 0])),
        Malformed::Nul { field: Field::Name }
    );
}

#[test]
fn welcome_is_exactly_22_bytes() {
    for len in [0, 21, 23] {
        assert_eq!(
            malformed(&raw(0x02, 0, 0, &vec![0; len])),
            Malformed::Length {
                ty: FrameType::Welcome,
                len: len as u32
            }
        );
    }
}

#[test]
fn ping_and_pong_hold_at_most_64_bytes() {
    for ty in [0x03, 0x04] {
        // Refused from the header alone: the 65 bytes never need to arrive.
        let header = Header {
            len: 65,
            ty,
            flags: 0,
            stream: 0,
        }
        .to_bytes();
        let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
        let mut input = &header[..];
        assert!(matches!(
            decoder.decode(&mut input),
            Err(DecodeError::Malformed(Malformed::Length { len: 65, .. }))
        ));
    }
}

#[test]
fn rooms_are_1_to_64_bytes_of_utf8_without_nul() {
    for ty in [0x10, 0x11, 0x12, 0x13] {
        assert!(decode_all(&raw(ty, 0, 0, "r".repeat(64).as_bytes())).is_ok());
        assert!(decode_all(&raw(ty, 0, 0, "é".as_bytes())).is_ok());
        assert!(matches!(
            malformed(&raw(ty, 0, 0, b"")),
            Malformed::Length { len: 0, .. }
        ));
        assert!(matches!(
            malformed(&raw(ty, 0, 0, "r".repeat(65).as_bytes())),
            Malformed::Length { len: 65, .. }
        ));
        assert_eq!(
            malformed(&raw(ty, 0, 0, &[b'a', 0xC3])),
            Malformed::Utf8 { field: Field::Room }
        );
        assert_eq!(
            malformed(&raw(ty, 0, 0, b"a\0b")),
            Malformed::Nul { field: Field::Room }
        );
    }
    assert!(Room::new("").is_err());
    assert!(Room::new(&"x".repeat(65)).is_err());
    assert_eq!(Room::new("ok").unwrap().as_str(), "ok");
}

#[test]
fn publish_room_length_is_checked() {
    assert_eq!(
        malformed(&raw(0x20, 0, 0, b"\x00body")),
        Malformed::RoomLength { len: 0 }
    );
    let mut payload = vec![65];
    payload.extend_from_slice(&[b'r'; 65]);
    assert_eq!(
        malformed(&raw(0x20, 0, 0, &payload)),
        Malformed::RoomLength { len: 65 }
    );
    // room_len past the end of the payload.
    assert_eq!(
        malformed(&raw(0x20, 0, 0, b"\x05ab")),
        Malformed::RoomLength { len: 5 }
    );
    assert_eq!(
        malformed(&raw(0x20, 0, 0, b"\x01\xFFbody")),
        Malformed::Utf8 { field: Field::Room }
    );
    // An empty body is a message too.
    assert!(decode_all(&raw(0x20, 0, 0, b"\x01r")).is_ok());
    assert!(matches!(
        malformed(&raw(0x20, 0, 0, b"\x01")),
        Malformed::Length { len: 1, .. }
    ));
}

#[test]
fn message_and_status_lengths() {
    assert!(matches!(
        malformed(&raw(0x21, 0, 0, &[0; 9])),
        Malformed::Length {
            ty: FrameType::Message,
            len: 9
        }
    ));
    for ty in [0x7E, 0x7F] {
        assert!(matches!(
            malformed(&raw(ty, 0, 0, &[0])),
            Malformed::Length { len: 1, .. }
        ));
        assert_eq!(
            malformed(&raw(ty, 0, 0, &[0, 3, 0xFF])),
            Malformed::Utf8 {
                field: Field::Reason
            }
        );
        assert_eq!(
            malformed(&raw(ty, 0, 0, &[0, 3, b'a', 0])),
            Malformed::Nul {
                field: Field::Reason
            }
        );
    }
}

// ---- error codes ----

#[test]
fn error_codes_match_the_table() {
    let table = [
        (1, "FRAME_TOO_LARGE", true),
        (2, "UNKNOWN_TYPE", true),
        (3, "MALFORMED", true),
        (4, "NOT_MEMBER", false),
        (5, "LIMIT", false),
        (6, "SLOW_CONSUMER", true),
        (7, "HEARTBEAT_TIMEOUT", true),
        (8, "SHUTTING_DOWN", true),
        (9, "OVERLOADED", true),
        (10, "GAP", false),
    ];
    for (i, (code, name, fatal)) in table.into_iter().enumerate() {
        let c = ErrorCode(code);
        assert_eq!(ErrorCode::ALL[i], c);
        assert_eq!(c.name(), Some(name));
        assert_eq!(c.is_fatal(), fatal, "{name}");
        assert_eq!(c.to_string(), format!("{name}({code})"));
    }
    assert_eq!(ErrorCode(0).name(), None);
    assert_eq!(ErrorCode(77).to_string(), "code 77");
}

#[test]
fn decode_errors_carry_their_codes_and_reasons() {
    assert_eq!(DecodeError::UnknownType(5).code(), ErrorCode::UNKNOWN_TYPE);
    assert_eq!(
        DecodeError::Malformed(Malformed::LateHello).code(),
        ErrorCode::MALFORMED
    );
    assert_eq!(
        DecodeError::FrameTooLarge { len: 9, max: 8 }.to_string(),
        "payload of 9 bytes is over the maximum of 8"
    );
    assert_eq!(
        DecodeError::UnknownType(5).to_string(),
        "unknown frame type 0x05"
    );
    assert_eq!(
        Malformed::Version { version: 2 }.to_string(),
        "unsupported version 2 (this server speaks 1)"
    );
}

#[test]
fn errors_are_sticky() {
    let mut wire = raw(0x55, 0, 0, b"");
    wire.extend(encode(Frame::Ping(b"after")));
    let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
    let mut input = &wire[..];
    assert_eq!(
        decoder.decode(&mut input),
        Err(DecodeError::UnknownType(0x55))
    );
    // The stream cannot be trusted after an error: the PING is not decoded.
    assert_eq!(
        decoder.decode(&mut input),
        Err(DecodeError::UnknownType(0x55))
    );
    assert_eq!(decoder.error(), Some(DecodeError::UnknownType(0x55)));
}

// ---- carry-over ----

#[test]
fn frame_fed_byte_by_byte() {
    let frame = Frame::Message(Message {
        from_conn_id: 1,
        room: room("lobby"),
        body: b"a frame fed one byte at a time",
        fragment: Fragment::default(),
    });
    let wire = encode(frame);
    let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
    for (i, byte) in wire.iter().enumerate() {
        let mut input = std::slice::from_ref(byte);
        let got = decoder.decode(&mut input).unwrap();
        assert!(input.is_empty());
        if i + 1 < wire.len() {
            assert_eq!(got, None);
            assert!(decoder.is_mid_frame());
        } else {
            assert_eq!(got, Some(frame));
        }
    }
    assert!(!decoder.is_mid_frame());
    // Carry-over is sized to the frame, and freed once idle.
    let carried = decoder.buffered_capacity() - Decoder::CARRY_RECORD_BYTES;
    assert!(carried >= frame.payload_len());
    assert!(carried < 2 * frame.payload_len());
    assert!(decoder.release_idle_buffer());
    assert_eq!(decoder.buffered_capacity(), 0);
    assert!(!decoder.release_idle_buffer());
}

#[test]
fn carry_buffer_is_kept_while_a_frame_is_incomplete() {
    let wire = encode(Frame::Ping(&[1; 40]));
    let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
    let mut input = &wire[..20];
    assert_eq!(decoder.decode(&mut input), Ok(None));
    assert!(!decoder.release_idle_buffer(), "mid-frame: must keep it");
    let mut input = &wire[20..];
    assert_eq!(decoder.decode(&mut input), Ok(Some(Frame::Ping(&[1; 40]))));
}

#[test]
fn whole_frames_in_a_chunk_allocate_nothing() {
    let mut wire = Vec::new();
    for i in 0..1000u32 {
        Frame::Ping(&i.to_be_bytes())
            .encode_to_vec(&mut wire)
            .unwrap();
    }
    let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
    let mut input = &wire[..];
    let mut n = 0u32;
    while let Some(frame) = decoder.decode(&mut input).unwrap() {
        assert_eq!(frame, Frame::Ping(&n.to_be_bytes()));
        n += 1;
    }
    assert_eq!(n, 1000, "1,000 sticky frames in one chunk");
    assert_eq!(decoder.buffered_capacity(), 0);
}

#[test]
fn header_split_but_payload_whole_is_parsed_in_place() {
    let wire = encode(Frame::Ping(b"abcdef"));
    let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
    let mut input = &wire[..5];
    assert_eq!(decoder.decode(&mut input), Ok(None));
    let mut input = &wire[5..];
    assert_eq!(decoder.decode(&mut input), Ok(Some(Frame::Ping(b"abcdef"))));
    // Only the cut header's record was held: no payload buffer.
    assert_eq!(decoder.buffered_capacity(), Decoder::CARRY_RECORD_BYTES);
    assert!(decoder.release_idle_buffer());
    assert_eq!(decoder.buffered_capacity(), 0);
}

#[test]
fn a_decoder_between_frames_is_small_and_holds_no_heap() {
    // One per connection, a million at C1M: three words, nothing allocated.
    assert!(std::mem::size_of::<Decoder>() <= 24);
    let mut decoder = Decoder::new(DEFAULT_MAX_PAYLOAD);
    let wire = encode(Frame::Ping(b"whole"));
    let mut input = &wire[..];
    assert!(decoder.decode(&mut input).unwrap().is_some());
    assert_eq!(decoder.decode(&mut input), Ok(None));
    assert_eq!(
        decoder.buffered_capacity(),
        0,
        "nothing carried, nothing held"
    );
}

// ---- encoders ----

#[test]
fn encode_into_a_slice() {
    let frame = Frame::Join(room("abc"));
    let mut buf = [0u8; 64];
    let n = frame.encode(&mut buf).unwrap();
    assert_eq!(&buf[..n], encode(frame).as_slice());
    assert_eq!(
        frame.encode(&mut buf[..10]),
        Err(EncodeError::BufferTooSmall { need: 11 })
    );
}

#[test]
fn encoders_refuse_what_a_decoder_would_refuse() {
    let long_name = "n".repeat(65);
    let cases = [
        Frame::Hello(Hello {
            heartbeat_ms: 0,
            name: &long_name,
        }),
        Frame::Hello(Hello {
            heartbeat_ms: 0,
            name: "a\0",
        }),
        Frame::Ping(&[0; 65]),
        Frame::Pong(&[0; 65]),
        Frame::Publish(Publish {
            room: room("r"),
            body: b"x",
            echo: false,
            fragment: Fragment {
                stream: 1,
                more: false,
                cancel: true,
            },
        }),
        Frame::Publish(Publish {
            room: room("r"),
            body: b"x",
            echo: false,
            fragment: Fragment {
                stream: 0,
                more: true,
                cancel: false,
            },
        }),
        Frame::Error(Status {
            code: ErrorCode::LIMIT,
            reason: "\0",
        }),
    ];
    for frame in cases {
        let mut out = Vec::new();
        assert!(
            matches!(frame.encode_to_vec(&mut out), Err(EncodeError::Invalid(_))),
            "{frame:?}"
        );
        assert!(out.is_empty(), "nothing written on error");
    }
}

#[test]
fn an_encoded_message_is_read_back_in_place() {
    let m = proto::Message {
        from_conn_id: 42,
        room: proto::Room::new("lobby").unwrap(),
        body: b"hello",
        fragment: proto::Fragment {
            stream: 3,
            more: true,
            cancel: false,
        },
    };
    let mut wire = Vec::new();
    Frame::Message(m).encode_to_vec(&mut wire).unwrap();
    assert_eq!(proto::Message::from_frame(&wire), Some(m));
    assert_eq!(
        proto::Message::from_frame(&wire[..wire.len() - 1]),
        None,
        "cut"
    );
    let mut ping = Vec::new();
    Frame::Ping(b"x").encode_to_vec(&mut ping).unwrap();
    assert_eq!(proto::Message::from_frame(&ping), None, "not a MESSAGE");
}
