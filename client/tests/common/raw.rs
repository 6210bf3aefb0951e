//! A publisher that writes frames by hand, for what `ringroom send` would
//! never send: names that are paths, wrong checksums, bodies in no format.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use client::body::Body;
use proto::{Decoder, Fragment, Frame, Hello, Publish, Room};
use sha2::{Digest, Sha256};

use super::TIMEOUT;

/// A connection welcomed and joined to one room.
pub struct RawPublisher {
    stream: TcpStream,
    room: String,
    name: String,
    max_payload: usize,
    next_stream: u16,
}

impl RawPublisher {
    /// Connects as `name`, joins `room`, and waits until the server says JOINED.
    pub fn join(addr: SocketAddr, room: &str, name: &str) -> RawPublisher {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut out = Vec::new();
        Frame::Hello(Hello {
            heartbeat_ms: 0,
            name,
        })
        .encode_to_vec(&mut out)
        .unwrap();
        Frame::Join(Room::new(room).unwrap())
            .encode_to_vec(&mut out)
            .unwrap();
        stream.write_all(&out).unwrap();
        let mut decoder = Decoder::new(1 << 20);
        let mut buf = vec![0u8; 64 << 10];
        let mut max_payload = 0;
        'read: loop {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the server closed before JOINED");
            let mut input = &buf[..n];
            while let Some(frame) = decoder.decode(&mut input).unwrap() {
                match frame {
                    Frame::Welcome(w) => max_payload = w.max_payload as usize,
                    Frame::Joined(_) => break 'read,
                    Frame::Error(e) => panic!("the server refused: {e:?}"),
                    _ => {}
                }
            }
        }
        RawPublisher {
            stream,
            room: room.to_string(),
            name: name.to_string(),
            max_payload,
            next_stream: 1,
        }
    }

    /// Publishes one fragment (stream 0: a whole message).
    pub fn publish(&mut self, body: &[u8], stream: u16, more: bool) {
        let mut out = Vec::new();
        Frame::Publish(Publish {
            room: Room::new(&self.room).unwrap(),
            body,
            echo: false,
            fragment: Fragment {
                stream,
                more,
                cancel: false,
            },
        })
        .encode_to_vec(&mut out)
        .unwrap();
        self.stream.write_all(&out).unwrap();
    }

    /// Sends `content` as a file named `file_name` in the client's format; the
    /// trailer carries `sha256`, or the true one when `None`.
    pub fn file(&mut self, file_name: &str, content: &[u8], sha256: Option<[u8; 32]>) {
        let stream = self.next_stream;
        self.next_stream += 1;
        let mut body = Vec::new();
        Body::FileHeader {
            sender: &self.name,
            size: content.len() as u64,
            file_name,
        }
        .encode(&mut body);
        self.publish(&body, stream, true);
        let chunk = self.max_payload - 1 - self.room.len();
        for part in content.chunks(chunk) {
            self.publish(part, stream, true);
        }
        let mut body = Vec::new();
        Body::FileTrailer {
            size: content.len() as u64,
            sha256: sha256.unwrap_or_else(|| Sha256::digest(content).into()),
        }
        .encode(&mut body);
        self.publish(&body, stream, false);
    }
}
