//! The client side of NATS's text protocol ("Client Protocol", docs.nats.io),
//! with no I/O: the operations a client writes, and an incremental parser of
//! what a server sends.
//!
//! Two programs speak it here: the server's cluster link (rooms across nodes,
//! `server/src/cluster/`) and the load generator's NATS peer. Why not a full
//! client crate: the cluster link must know when the NATS server has taken a
//! subscription (a `PING` after the `SUB`, whose `PONG` confirms it, which
//! `async-nats` does not expose: its `flush()` only empties the socket
//! buffer), must bound every buffer in bytes, and runs in a thread of its own
//! without an async runtime. What it needs of the protocol is here, and small.
//!
//! Every parse is bounded: a control line longer than [`MAX_CONTROL_LINE`]
//! or a payload larger than the caller's maximum is an error, found from the
//! line alone (nothing waits for, or allocates, such a payload).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest control line accepted (nats-server's default `max_control_line`).
pub const MAX_CONTROL_LINE: usize = 4096;

/// One operation from the server, borrowing the parsed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerOp<'a> {
    /// `INFO {json}`: the server's description; [`Info::parse`] reads it.
    Info(&'a str),
    /// `MSG`: a message on one of our subscriptions.
    Msg(Msg<'a>),
    /// `PING`: answer with [`pong`].
    Ping,
    /// `PONG`: the answer to our oldest unanswered `PING`.
    Pong,
    /// `+OK` (only in verbose mode).
    Ok,
    /// `-ERR 'text'`: the text without its quotes. Most are followed by the
    /// server closing the connection.
    Err(&'a str),
}

/// `MSG <subject> <sid> [reply-to] <#bytes>` and its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg<'a> {
    /// The subject it was published to.
    pub subject: &'a str,
    /// Our subscription id.
    pub sid: u64,
    /// The reply subject, if the publisher gave one.
    pub reply: Option<&'a str>,
    /// The payload.
    pub payload: &'a [u8],
}

/// What cannot be parsed; the connection must be closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A control line longer than [`MAX_CONTROL_LINE`].
    LineTooLong,
    /// A payload above the caller's maximum.
    PayloadTooLarge(usize),
    /// A line that is no server operation, or one with bad arguments.
    BadLine(String),
    /// A payload not followed by CRLF.
    NoCrlf,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineTooLong => write!(f, "a control line over {MAX_CONTROL_LINE} bytes"),
            Self::PayloadTooLarge(n) => write!(f, "a message of {n} bytes, above the maximum"),
            Self::BadLine(line) => write!(f, "not a NATS server operation: {line:?}"),
            Self::NoCrlf => write!(f, "a message payload not followed by CRLF"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses one operation at the start of `buf`: the operation and the bytes
/// it took, or `None` if `buf` does not hold all of it yet. `max_payload`
/// bounds a `MSG`'s payload.
pub fn parse(buf: &[u8], max_payload: usize) -> Result<Option<(ServerOp<'_>, usize)>, ParseError> {
    let Some(eol) = find_crlf(buf) else {
        return if buf.len() > MAX_CONTROL_LINE {
            Err(ParseError::LineTooLong)
        } else {
            Ok(None)
        };
    };
    if eol > MAX_CONTROL_LINE {
        return Err(ParseError::LineTooLong);
    }
    let line = &buf[..eol];
    let used = eol + 2;
    let bad = || ParseError::BadLine(String::from_utf8_lossy(line).into_owned());
    let (op, rest) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(at) => (&line[..at], &line[at + 1..]),
        None => (line, &line[line.len()..]),
    };
    let op_is = |name: &[u8]| op.eq_ignore_ascii_case(name);
    let text = || std::str::from_utf8(rest).map(str::trim).map_err(|_| bad());
    if op_is(b"PING") {
        return Ok(Some((ServerOp::Ping, used)));
    }
    if op_is(b"PONG") {
        return Ok(Some((ServerOp::Pong, used)));
    }
    if op_is(b"+OK") {
        return Ok(Some((ServerOp::Ok, used)));
    }
    if op_is(b"INFO") {
        return Ok(Some((ServerOp::Info(text()?), used)));
    }
    if op_is(b"-ERR") {
        let t = text()?;
        let t = t
            .strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .unwrap_or(t);
        return Ok(Some((ServerOp::Err(t), used)));
    }
    if !op_is(b"MSG") {
        return Err(bad());
    }
    let args = text()?;
    let args: Vec<&str> = args.split_ascii_whitespace().collect();
    let (subject, sid, reply, size) = match args[..] {
        [subject, sid, size] => (subject, sid, None, size),
        [subject, sid, reply, size] => (subject, sid, Some(reply), size),
        _ => return Err(bad()),
    };
    let sid: u64 = sid.parse().map_err(|_| bad())?;
    let size: usize = size.parse().map_err(|_| bad())?;
    if size > max_payload {
        return Err(ParseError::PayloadTooLarge(size));
    }
    let end = used + size;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(ParseError::NoCrlf);
    }
    let msg = Msg {
        subject,
        sid,
        reply,
        payload: &buf[used..end],
    };
    Ok(Some((ServerOp::Msg(msg), end + 2)))
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    let limit = buf.len().min(MAX_CONTROL_LINE + 2);
    buf[..limit].windows(2).position(|w| w == b"\r\n")
}

/// The fields of `CONNECT` a client sets here. Acknowledgements are always
/// off (`verbose: false`): errors still come as `-ERR`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Connect<'a> {
    /// The client's name, shown by the server's monitoring.
    pub name: &'a str,
    /// Whether the server sends the client its own messages back.
    pub echo: bool,
    /// User and password, if the server requires them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    /// The password for `user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<&'a str>,
    /// A token, if the server requires one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<&'a str>,
}

/// Writes `CONNECT {...}`.
pub fn connect(out: &mut Vec<u8>, c: &Connect<'_>) {
    #[derive(Serialize)]
    struct Wire<'a> {
        verbose: bool,
        pedantic: bool,
        lang: &'static str,
        version: &'static str,
        protocol: u8,
        #[serde(flatten)]
        c: &'a Connect<'a>,
    }
    let wire = Wire {
        verbose: false,
        pedantic: false,
        lang: "rust",
        version: env!("CARGO_PKG_VERSION"),
        // 1: the server may send INFO updates (other servers of the cluster).
        protocol: 1,
        c,
    };
    out.extend_from_slice(b"CONNECT ");
    serde_json::to_writer(&mut *out, &wire).expect("a Vec takes any JSON");
    out.extend_from_slice(b"\r\n");
}

/// Writes `PUB <subject> <#bytes>` and a payload given in two parts (a
/// header and a body, so neither is copied into the other first).
pub fn publish(out: &mut Vec<u8>, subject: &str, head: &[u8], body: &[u8]) {
    out.reserve(subject.len() + head.len() + body.len() + 32);
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    push_decimal(out, (head.len() + body.len()) as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(head);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

/// Writes `PUB <subject> <reply> <#bytes>` and the payload: a request.
pub fn request(out: &mut Vec<u8>, subject: &str, reply: &str, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    out.extend_from_slice(reply.as_bytes());
    out.push(b' ');
    push_decimal(out, payload.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Writes `SUB <subject> <sid>`.
pub fn subscribe(out: &mut Vec<u8>, subject: &str, sid: u64) {
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    push_decimal(out, sid);
    out.extend_from_slice(b"\r\n");
}

/// Writes `UNSUB <sid>`.
pub fn unsubscribe(out: &mut Vec<u8>, sid: u64) {
    out.extend_from_slice(b"UNSUB ");
    push_decimal(out, sid);
    out.extend_from_slice(b"\r\n");
}

/// Writes `PING`: the server answers `PONG` once it has processed
/// everything written before it (so a `PONG` confirms earlier `SUB`s).
pub fn ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PING\r\n");
}

/// Writes `PONG`, the answer to the server's `PING`.
pub fn pong(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG\r\n");
}

fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The parts of `INFO` a client uses.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Info {
    /// The server's unique id.
    #[serde(default)]
    pub server_id: String,
    /// Its name (the id unless configured).
    #[serde(default)]
    pub server_name: String,
    /// nats-server's version.
    #[serde(default)]
    pub version: String,
    /// The largest payload it accepts in a `PUB`.
    #[serde(default)]
    pub max_payload: u64,
    /// Whether it requires authentication.
    #[serde(default)]
    pub auth_required: bool,
    /// Other servers of its cluster clients may connect to (`host:port`).
    #[serde(default)]
    pub connect_urls: Vec<String>,
    /// Set when the server is about to shut down (lame duck mode).
    #[serde(default)]
    pub ldm: bool,
}

impl Info {
    /// Reads the JSON of an `INFO` line.
    pub fn parse(json: &str) -> Result<Self, String> {
        serde_json::from_str(json).map_err(|e| format!("INFO: {e}"))
    }
}

/// Whether `s` is a subject a client may publish to: dot-separated tokens,
/// none empty, none with whitespace or a wildcard (`*`, `>`).
pub fn is_valid_subject(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b > b' ' && b != 0x7f && b != b'*' && b != b'>')
        })
}

#[cfg(test)]
mod tests;
