//! UDP discovery datagrams.
//!
//! Request: `RRFIND01` then an 8-byte nonce. Reply: `RRHERE01`, the same nonce,
//! `u16 tcp_port`, then the server's name (UTF-8, the rest). Anything else is
//! not a discovery datagram and is ignored.

/// The first 8 bytes of a request.
pub const REQUEST_MAGIC: &[u8; 8] = b"RRFIND01";
/// The first 8 bytes of a reply.
pub const REPLY_MAGIC: &[u8; 8] = b"RRHERE01";
/// A request's exact length.
pub const REQUEST_LEN: usize = 16;
/// A reply's length without the name.
pub const REPLY_FIXED_LEN: usize = 18;

/// Builds a request carrying `nonce`.
pub fn request(nonce: [u8; 8]) -> [u8; REQUEST_LEN] {
    let mut out = [0; REQUEST_LEN];
    out[..8].copy_from_slice(REQUEST_MAGIC);
    out[8..].copy_from_slice(&nonce);
    out
}

/// The nonce of a request, or `None` if the datagram is not one.
pub fn parse_request(datagram: &[u8]) -> Option<[u8; 8]> {
    let (magic, nonce) = datagram.split_first_chunk::<8>()?;
    if magic != REQUEST_MAGIC || nonce.len() != 8 {
        return None;
    }
    nonce.try_into().ok()
}

/// A server's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The nonce of the request it answers.
    pub nonce: [u8; 8],
    /// The server's TCP port.
    pub tcp_port: u16,
    /// The server's name.
    pub name: &'a str,
}

impl Reply<'_> {
    /// Appends the reply datagram to `out`.
    pub fn encode_to_vec(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(REPLY_MAGIC);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.tcp_port.to_be_bytes());
        out.extend_from_slice(self.name.as_bytes());
    }
}

/// Parses a reply, or `None` if the datagram is not one.
pub fn parse_reply(datagram: &[u8]) -> Option<Reply<'_>> {
    let (magic, rest) = datagram.split_first_chunk::<8>()?;
    let (nonce, rest) = rest.split_first_chunk::<8>()?;
    let (port, name) = rest.split_first_chunk::<2>()?;
    if magic != REPLY_MAGIC {
        return None;
    }
    Some(Reply {
        nonce: *nonce,
        tcp_port: u16::from_be_bytes(*port),
        name: std::str::from_utf8(name).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let nonce = *b"12345678";
        assert_eq!(parse_request(&request(nonce)), Some(nonce));
    }

    #[test]
    fn other_datagrams_are_not_requests() {
        assert_eq!(parse_request(b""), None);
        assert_eq!(parse_request(b"RRFIND01"), None, "no nonce");
        assert_eq!(parse_request(b"RRFIND01123456789"), None, "too long");
        assert_eq!(parse_request(b"RRFIND0212345678"), None, "other magic");
    }

    #[test]
    fn reply_round_trip() {
        let reply = Reply {
            nonce: *b"abcdefgh",
            tcp_port: 7700,
            name: "ringroom-1",
        };
        let mut wire = Vec::new();
        reply.encode_to_vec(&mut wire);
        assert_eq!(wire.len(), REPLY_FIXED_LEN + 10);
        assert_eq!(&wire[16..18], &[0x1e, 0x14]);
        assert_eq!(parse_reply(&wire), Some(reply));
        assert_eq!(parse_reply(&wire[..17]), None);
        assert_eq!(parse_reply(&request(*b"abcdefgh")), None);
    }
}
