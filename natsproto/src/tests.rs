use super::*;
use proptest::prelude::*;

/// Parses every operation in `buf`, which must end on a whole one.
fn parse_all(buf: &[u8]) -> Vec<ServerOp<'_>> {
    let mut at = 0;
    let mut ops = Vec::new();
    while at < buf.len() {
        let (op, used) = parse(&buf[at..], 1 << 20).unwrap().expect("whole");
        ops.push(op);
        at += used;
    }
    ops
}

#[test]
fn server_operations_as_nats_server_writes_them() {
    let buf = b"INFO {\"server_id\":\"NA\",\"version\":\"2.9.10\",\"max_payload\":1048576,\"connect_urls\":[\"127.0.0.1:4223\"]}\r\n\
PING\r\npong\r\n+OK\r\n-ERR 'Slow Consumer'\r\nMSG room.a 7 5\r\nhello\r\nMSG room.b 8 _INBOX.x 0\r\n\r\n";
    let ops = parse_all(buf);
    assert_eq!(ops.len(), 7);
    let ServerOp::Info(json) = ops[0] else {
        panic!("{:?}", ops[0])
    };
    let info = Info::parse(json).unwrap();
    assert_eq!(info.max_payload, 1_048_576);
    assert_eq!(info.connect_urls, ["127.0.0.1:4223"]);
    assert_eq!(ops[1], ServerOp::Ping);
    assert_eq!(
        ops[2],
        ServerOp::Pong,
        "operation names are case-insensitive"
    );
    assert_eq!(ops[3], ServerOp::Ok);
    assert_eq!(ops[4], ServerOp::Err("Slow Consumer"));
    assert_eq!(
        ops[5],
        ServerOp::Msg(Msg {
            subject: "room.a",
            sid: 7,
            reply: None,
            payload: b"hello"
        })
    );
    assert_eq!(
        ops[6],
        ServerOp::Msg(Msg {
            subject: "room.b",
            sid: 8,
            reply: Some("_INBOX.x"),
            payload: b""
        })
    );
}

#[test]
fn client_operations_as_the_protocol_document_writes_them() {
    let mut out = Vec::new();
    subscribe(&mut out, "foo", 1);
    publish(&mut out, "foo", b"hel", b"lo");
    request(&mut out, "foo", "_INBOX.1", b"");
    unsubscribe(&mut out, 1);
    ping(&mut out);
    pong(&mut out);
    assert_eq!(
        out,
        b"SUB foo 1\r\nPUB foo 5\r\nhello\r\nPUB foo _INBOX.1 0\r\n\r\nUNSUB 1\r\nPING\r\nPONG\r\n"
    );
    let mut out = Vec::new();
    connect(
        &mut out,
        &Connect {
            name: "node \"7\"",
            echo: false,
            ..Connect::default()
        },
    );
    let line = std::str::from_utf8(&out).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(line.strip_prefix("CONNECT ").unwrap().trim_end()).unwrap();
    assert_eq!(json["echo"], false);
    assert_eq!(json["verbose"], false);
    assert_eq!(json["name"], "node \"7\"", "escaped as JSON");
    assert!(json.get("user").is_none(), "unset fields are left out");
}

#[test]
fn a_split_operation_waits_for_the_rest() {
    let buf = b"MSG room.a 7 11\r\nhello world\r\nPING\r\n";
    for cut in 0..buf.len() {
        let head = &buf[..cut];
        match parse(head, 1 << 20).unwrap() {
            None => assert!(cut < 30, "cut at {cut}: the MSG is whole at 30"),
            Some((ServerOp::Msg(m), used)) => {
                assert_eq!(used, 30);
                assert_eq!(m.payload, b"hello world");
            }
            Some(other) => panic!("{other:?}"),
        }
    }
}

#[test]
fn bounds_and_garbage_are_errors() {
    assert_eq!(
        parse(b"MSG a 1 2000000\r\n", 1 << 20),
        Err(ParseError::PayloadTooLarge(2_000_000)),
        "known from the line alone"
    );
    let long = vec![b'x'; MAX_CONTROL_LINE + 10];
    assert_eq!(parse(&long, 1 << 20), Err(ParseError::LineTooLong));
    assert!(matches!(
        parse(b"HELLO\r\n", 10),
        Err(ParseError::BadLine(_))
    ));
    assert!(matches!(
        parse(b"MSG a x 1\r\n", 10),
        Err(ParseError::BadLine(_))
    ));
    assert!(matches!(
        parse(b"MSG a 1\r\n", 10),
        Err(ParseError::BadLine(_))
    ));
    assert_eq!(parse(b"MSG a 1 2\r\nabXY", 10), Err(ParseError::NoCrlf));
}

#[test]
fn subjects() {
    assert!(is_valid_subject("ringroom.room.lobby%20one"));
    for bad in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>", "a\tb"] {
        assert!(!is_valid_subject(bad), "{bad:?}");
    }
}

proptest! {
    /// Any payload, cut anywhere: the same message once the bytes are whole.
    #[test]
    fn any_payload_any_cut(payload in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..400) {
        let mut buf = Vec::new();
        buf.extend_from_slice(format!("MSG s.t 3 {}\r\n", payload.len()).as_bytes());
        buf.extend_from_slice(&payload);
        buf.extend_from_slice(b"\r\n");
        let cut = cut.min(buf.len());
        if let Some((op, used)) = parse(&buf[..cut], 1 << 20).unwrap() {
            prop_assert_eq!(used, buf.len());
            prop_assert_eq!(op, ServerOp::Msg(Msg { subject: "s.t", sid: 3, reply: None, payload: &payload }));
        } else {
            prop_assert!(cut < buf.len());
        }
    }
}
