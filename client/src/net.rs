//! A session's TCP connection: a reader thread that hands received bytes to
//! the runtime, and a writer thread that empties the [`Outbox`] lane by lane.
//! Each connection has a generation number, so that what its threads report
//! after it was replaced is recognised and dropped.
//!
//! Bounded: the reader hands over at most [`READ_CHUNKS`] chunks of
//! [`READ_CHUNK`] bytes before it blocks (TCP then pushes back on the
//! server), and the writer holds one write at a time.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::outbox::{Next, Outbox};

/// Bytes one read takes.
pub const READ_CHUNK: usize = 64 << 10;
/// Chunks read and not yet handled, at most.
pub const READ_CHUNKS: usize = 64;

/// What a connection's threads report.
#[derive(Debug)]
pub enum NetEvent {
    /// Bytes from the server.
    Data(u64, Vec<u8>),
    /// The connection ended (EOF, an error, or our own shutdown).
    Closed(u64, String),
    /// A file's last fragment was written to the socket.
    FileSent(u64, u32),
    /// A file could not be read; its CANCEL was queued.
    FileFailed(u64, u32, String),
}

struct Lanes {
    outbox: Outbox,
    /// Write what is queued, then shut the write side.
    finish: bool,
    /// Stop now.
    abort: bool,
}

struct Shared {
    lanes: Mutex<Lanes>,
    wake: Condvar,
}

/// One open connection.
pub struct Conn {
    /// Its generation.
    pub generation: u64,
    stream: TcpStream,
    shared: Arc<Shared>,
}

impl Conn {
    /// Connects to `addr` within `timeout` and starts the threads.
    pub fn open(
        addr: SocketAddr,
        generation: u64,
        timeout: Duration,
        outbox: Outbox,
        events: Sender<NetEvent>,
    ) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        // Chat lines are small and wanted now.
        stream.set_nodelay(true)?;
        let shared = Arc::new(Shared {
            lanes: Mutex::new(Lanes {
                outbox,
                finish: false,
                abort: false,
            }),
            wake: Condvar::new(),
        });
        let reader = stream.try_clone()?;
        let tx = events.clone();
        std::thread::Builder::new()
            .name("ringroom-read".into())
            .spawn(move || read_loop(reader, generation, tx))?;
        let writer = stream.try_clone()?;
        let lanes = shared.clone();
        std::thread::Builder::new()
            .name("ringroom-write".into())
            .spawn(move || write_loop(writer, generation, lanes, events))?;
        Ok(Conn {
            generation,
            stream,
            shared,
        })
    }

    /// Works on the outbox, then wakes the writer.
    pub fn with_outbox<R>(&self, f: impl FnOnce(&mut Outbox) -> R) -> R {
        let mut lanes = self.shared.lanes.lock().unwrap();
        let r = f(&mut lanes.outbox);
        self.shared.wake.notify_one();
        r
    }

    /// Writes everything queued, then shuts the write side: the server
    /// handles all of it and closes (PROTOCOL.md, Delivery guarantees).
    pub fn finish(&self) {
        self.shared.lanes.lock().unwrap().finish = true;
        self.shared.wake.notify_one();
    }

    /// Closes now, dropping what is queued.
    pub fn close(&self) {
        self.shared.lanes.lock().unwrap().abort = true;
        self.shared.wake.notify_one();
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

fn read_loop(mut stream: TcpStream, generation: u64, events: Sender<NetEvent>) {
    let why = loop {
        let mut buf = vec![0; READ_CHUNK];
        match stream.read(&mut buf) {
            Ok(0) => break "the server closed the connection".to_string(),
            Ok(n) => {
                buf.truncate(n);
                if events.send(NetEvent::Data(generation, buf)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break e.to_string(),
        }
    };
    let _ = events.send(NetEvent::Closed(generation, why));
}

fn write_loop(
    mut stream: TcpStream,
    generation: u64,
    shared: Arc<Shared>,
    events: Sender<NetEvent>,
) {
    loop {
        let next = {
            let mut lanes = shared.lanes.lock().unwrap();
            loop {
                if lanes.abort {
                    return;
                }
                match lanes.outbox.next(Instant::now()) {
                    Next::Idle if lanes.finish => {
                        let _ = stream.shutdown(Shutdown::Write);
                        return;
                    }
                    Next::Idle => lanes = shared.wake.wait(lanes).unwrap(),
                    Next::WaitUntil(at) => {
                        let wait = at.saturating_duration_since(Instant::now());
                        lanes = shared.wake.wait_timeout(lanes, wait).unwrap().0;
                    }
                    other => break other,
                }
            }
        };
        match next {
            Next::Write { bytes, file } => {
                if let Err(e) = stream.write_all(&bytes) {
                    let _ = stream.shutdown(Shutdown::Both);
                    let _ = events.send(NetEvent::Closed(generation, e.to_string()));
                    return;
                }
                if let Some((id, _, true)) = file {
                    let _ = events.send(NetEvent::FileSent(generation, id));
                }
            }
            Next::Failed { id, error } => {
                let _ = events.send(NetEvent::FileFailed(generation, id, error.to_string()));
            }
            Next::Idle | Next::WaitUntil(_) => unreachable!(),
        }
    }
}
