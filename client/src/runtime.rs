//! The session on a real socket: one loop that waits on the network, the
//! user's commands and the session's timers at once, and turns what happens
//! into [`Note`]s for the terminal. Shared by `chat`, `send` and `recv`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use proto::{Decoder, Frame, Publish, Room};

use crate::body::{self, Body};
use crate::files::inbound::{Inbound, Incoming, Limits};
use crate::files::outgoing::OutgoingFile;
use crate::net::{Conn, NetEvent, READ_CHUNKS};
use crate::outbox::Outbox;
use crate::session::{self, Action, Session};

/// Files sent at once on one connection; more wait their turn (the server
/// allows 16 open streams per connection by default).
pub const MAX_SENDING: usize = 8;

/// Files waiting for a slot, at most: each holds an open file.
pub const MAX_WAITING: usize = 256;

/// How a runtime is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// The server.
    pub addr: SocketAddr,
    /// The session's behaviour (our name among it).
    pub session: session::Config,
    /// Where received files go; `None`: take none.
    pub dir: Option<std::path::PathBuf>,
    /// Bounds on received files.
    pub limits: Limits,
    /// Bytes a second for files sent, if paced.
    pub rate: Option<u64>,
    /// How long a connect may take.
    pub connect_timeout: Duration,
}

/// Something for the user.
#[derive(Debug, Clone)]
pub enum Note {
    /// Connecting to the server.
    Connecting(SocketAddr),
    /// What the session says (welcomed, joined, lost, ...).
    Session(session::Event),
    /// A chat line.
    Text {
        /// The room.
        room: String,
        /// The publisher's connection id.
        from: u64,
        /// The sender's name (the body's; for a raw body, empty).
        sender: String,
        /// The text, made printable.
        text: String,
        /// Whether the body was another client's (not in the client format).
        raw: bool,
    },
    /// A file coming in, saved or discarded.
    Incoming(Incoming),
    /// A file we send has started.
    SendStarted {
        /// Our number for it.
        id: u32,
        /// Its name.
        name: String,
        /// Its size.
        size: u64,
        /// The room.
        room: String,
    },
    /// A file we send has gone to the server, all of it.
    SendDone {
        /// Our number for it.
        id: u32,
    },
    /// A file we send did not go (cancelled, unreadable, connection lost).
    SendFailed {
        /// Our number for it.
        id: u32,
        /// Why.
        why: String,
    },
    /// Anything else worth a line.
    Info(String),
}

/// A file being sent, for progress bars.
#[derive(Debug, Clone)]
pub struct Sending {
    /// Its name.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Bytes handed to the socket.
    pub sent: Arc<AtomicU64>,
    /// When it started.
    pub started: Instant,
}

/// The client's loop state.
pub struct Runtime {
    opts: Options,
    session: Session,
    conn: Option<Conn>,
    generation: u64,
    decoder: Decoder,
    inbound: Inbound,
    net_tx: Sender<NetEvent>,
    net_rx: Receiver<NetEvent>,
    notes: VecDeque<Note>,
    next_file_id: u32,
    next_stream: u16,
    /// Files opened and waiting for a slot (or for their room to be joined).
    waiting: VecDeque<OutgoingFile>,
    /// Files on the wire.
    sending: BTreeMap<u32, Sending>,
    /// Waiting to close: the writer drains, the server closes.
    finishing: bool,
}

impl Runtime {
    /// A runtime that connects on its first [`Runtime::wait`].
    pub fn new(opts: Options) -> Runtime {
        let (net_tx, net_rx) = crossbeam_channel::bounded(READ_CHUNKS);
        let seed = fastrand::u64(..);
        Runtime {
            session: Session::new(opts.session.clone(), Instant::now(), seed),
            inbound: Inbound::new(opts.dir.clone(), opts.limits.clone()),
            opts,
            conn: None,
            generation: 0,
            decoder: Decoder::new(proto::DEFAULT_MAX_PAYLOAD + 8),
            net_tx,
            net_rx,
            notes: VecDeque::new(),
            next_file_id: 1,
            next_stream: 1,
            waiting: VecDeque::new(),
            sending: BTreeMap::new(),
            finishing: false,
        }
    }

    /// The session (rooms, state).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The next note for the user.
    pub fn poll_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    /// Files being sent, by our number.
    pub fn sending(&self) -> &BTreeMap<u32, Sending> {
        &self.sending
    }

    /// Files waiting to be sent.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Files being received.
    pub fn receiving(&self) -> Vec<crate::files::inbound::Progress> {
        self.inbound.progress()
    }

    /// Wants `room`, now and after every reconnect.
    pub fn join(&mut self, room: &str) -> Result<(), String> {
        self.session
            .join(room)
            .map_err(|e| format!("room {room:?}: {e}"))?;
        self.flush_session();
        Ok(())
    }

    /// Leaves `room`.
    pub fn leave(&mut self, room: &str) -> Result<(), String> {
        self.session
            .leave(room)
            .map_err(|e| format!("room {room:?}: {e}"))?;
        self.flush_session();
        Ok(())
    }

    /// Publishes a chat line to `room`.
    pub fn say(&mut self, room: &str, sender: &str, text: &str) -> Result<(), String> {
        if !self.session.is_joined(room) {
            return Err(format!(
                "not in room {room:?} on the server yet (not connected, or not joined)"
            ));
        }
        let mut body = Vec::new();
        Body::Text { sender, text }.encode(&mut body);
        let max = self.session.welcome().map_or(0, |w| w.max_payload) as usize;
        if 1 + room.len() + body.len() > max {
            return Err(format!(
                "the line is too long: the server takes at most {max} bytes a message"
            ));
        }
        let mut frame = Vec::new();
        Frame::Publish(Publish {
            room: Room::new(room).map_err(|e| e.to_string())?,
            body: &body,
            echo: false,
            fragment: proto::Fragment::default(),
        })
        .encode_to_vec(&mut frame)
        .map_err(|e| e.to_string())?;
        match &self.conn {
            Some(conn) => conn
                .with_outbox(|o| o.push_control(&frame))
                .map_err(|e| e.to_string()),
            None => Err("not connected".into()),
        }
    }

    /// Opens `path` to be sent to `room`; it goes once the room is joined and
    /// a slot is free. Returns our number for it.
    pub fn send_file(&mut self, room: &str, path: &Path) -> Result<u32, String> {
        Room::new(room).map_err(|e| format!("room {room:?}: {e}"))?;
        if self.waiting.len() >= MAX_WAITING {
            return Err(format!(
                "{}: {MAX_WAITING} files are waiting already; send it when they have gone",
                path.display()
            ));
        }
        let id = self.next_file_id;
        let file = OutgoingFile::open(path, id, 0, room, &self.opts.session.name)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.next_file_id += 1;
        self.waiting.push_back(file);
        self.start_waiting();
        Ok(id)
    }

    /// Cancels file `id` (sending or waiting); false if there is none.
    pub fn cancel(&mut self, id: u32) -> bool {
        if let Some(i) = self.waiting.iter().position(|f| f.id == id) {
            self.waiting.remove(i);
            self.notes.push_back(Note::SendFailed {
                id,
                why: "cancelled".into(),
            });
            return true;
        }
        if self.sending.remove(&id).is_none() {
            return false;
        }
        if let Some(conn) = &self.conn {
            conn.with_outbox(|o| o.cancel(id));
        }
        self.notes.push_back(Note::SendFailed {
            id,
            why: "cancelled: receivers were told to delete it".into(),
        });
        self.start_waiting();
        true
    }

    /// Cancels every file being sent or waiting; returns how many.
    pub fn cancel_all(&mut self) -> usize {
        let ids: Vec<u32> = self
            .sending
            .keys()
            .copied()
            .chain(self.waiting.iter().map(|f| f.id))
            .collect();
        ids.iter().filter(|id| self.cancel(**id)).count()
    }

    /// Stops reconnecting, writes what is queued, and lets the server close:
    /// [`Runtime::is_closed`] tells when it has.
    pub fn finish(&mut self) {
        self.session.stop();
        self.finishing = true;
        if let Some(conn) = &self.conn {
            conn.finish();
        }
    }

    /// Deletes every file half received (we are leaving).
    pub fn abandon(&mut self) {
        for inc in self.inbound.on_disconnect() {
            self.notes.push_back(Note::Incoming(inc));
        }
    }

    /// Whether the connection is gone and will not come back.
    pub fn is_closed(&self) -> bool {
        self.conn.is_none() && self.session.is_over()
    }

    /// Waits at most `max` for the network, the session's timers, or a
    /// command on `commands`; returns the command if one came.
    pub fn wait<T>(&mut self, max: Duration, commands: &Receiver<T>) -> Option<T> {
        let now = Instant::now();
        self.timers(now);
        let deadline = self
            .session
            .next_deadline()
            .map_or(now + max, |d| d.min(now + max));
        let timeout = deadline.saturating_duration_since(now);
        crossbeam_channel::select! {
            recv(self.net_rx) -> ev => {
                self.on_net(ev.expect("the runtime holds a sender"));
                // Drain what else is ready, a bounded amount.
                for _ in 0..READ_CHUNKS {
                    match self.net_rx.try_recv() {
                        Ok(ev) => self.on_net(ev),
                        Err(_) => break,
                    }
                }
                self.timers(Instant::now());
                None
            }
            recv(commands) -> cmd => cmd.ok(),
            default(timeout) => {
                self.timers(Instant::now());
                None
            }
        }
    }

    fn timers(&mut self, now: Instant) {
        while let Some(action) = self.session.poll_action(now) {
            match action {
                Action::Connect => self.connect(now),
                Action::Close => {
                    if let Some(conn) = self.conn.take() {
                        conn.close();
                    }
                    self.connection_lost(now, "closed by us".into());
                }
            }
        }
        self.flush_session();
    }

    fn connect(&mut self, now: Instant) {
        self.generation += 1;
        self.notes.push_back(Note::Connecting(self.opts.addr));
        let outbox = Outbox::new(proto::DEFAULT_MAX_PAYLOAD, self.opts.rate, now);
        match Conn::open(
            self.opts.addr,
            self.generation,
            self.opts.connect_timeout,
            outbox,
            self.net_tx.clone(),
        ) {
            Ok(conn) => {
                self.conn = Some(conn);
                self.decoder = Decoder::new(proto::DEFAULT_MAX_PAYLOAD + 8);
                self.session.on_connected(Instant::now());
            }
            Err(e) => self
                .session
                .on_connect_failed(Instant::now(), e.to_string()),
        }
        self.drain_session_events();
    }

    fn on_net(&mut self, ev: NetEvent) {
        let current = |g: u64| Some(g) == self.conn.as_ref().map(|c| c.generation);
        match ev {
            NetEvent::Data(g, bytes) if current(g) => self.on_data(&bytes),
            NetEvent::Closed(g, why) if current(g) => {
                self.conn = None;
                self.connection_lost(Instant::now(), why);
            }
            NetEvent::FileSent(g, id) if current(g) => {
                if self.sending.remove(&id).is_some() {
                    self.notes.push_back(Note::SendDone { id });
                }
                self.start_waiting();
            }
            NetEvent::FileFailed(g, id, why) if current(g) => {
                if self.sending.remove(&id).is_some() {
                    self.notes.push_back(Note::SendFailed { id, why });
                }
                self.start_waiting();
            }
            // From a connection already replaced.
            _ => {}
        }
    }

    fn on_data(&mut self, bytes: &[u8]) {
        let now = Instant::now();
        let mut input = bytes;
        loop {
            let frame = match self.decoder.decode(&mut input) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    self.notes.push_back(Note::Info(format!(
                        "the server sent a frame this client cannot read ({e}); reconnecting"
                    )));
                    if let Some(conn) = self.conn.take() {
                        conn.close();
                    }
                    self.connection_lost(now, format!("bad frame from the server: {e}"));
                    return;
                }
            };
            let welcome = match frame {
                Frame::Welcome(w) => Some(w),
                _ => None,
            };
            let Some(m) = self.session.on_frame(now, frame) else {
                if let Some(w) = welcome {
                    self.decoder
                        .set_max_payload(w.max_payload.saturating_add(8));
                    if let Some(conn) = &self.conn {
                        conn.with_outbox(|o| o.set_max_payload(w.max_payload));
                    }
                }
                continue;
            };
            let room = m.room.as_str();
            if m.fragment.stream == 0 {
                let note = match Body::parse(m.body) {
                    Ok(Body::Text { sender, text }) => Note::Text {
                        room: room.to_string(),
                        from: m.from_conn_id,
                        sender: body::printable(sender),
                        text: body::printable(text),
                        raw: false,
                    },
                    _ => Note::Text {
                        room: room.to_string(),
                        from: m.from_conn_id,
                        sender: String::new(),
                        text: body::show_raw(m.body),
                        raw: true,
                    },
                };
                self.notes.push_back(note);
            } else if let Some(inc) =
                self.inbound
                    .on_fragment(m.from_conn_id, room, m.fragment, m.body)
            {
                self.notes.push_back(Note::Incoming(inc));
            }
        }
        self.drain_session_events();
        self.flush_session();
    }

    fn connection_lost(&mut self, now: Instant, why: String) {
        for inc in self.inbound.on_disconnect() {
            self.notes.push_back(Note::Incoming(inc));
        }
        let lost: Vec<u32> = self.sending.keys().copied().collect();
        self.sending.clear();
        for id in lost {
            self.notes.push_back(Note::SendFailed {
                id,
                why: "the connection to the server was lost (transfers do not resume)".into(),
            });
        }
        self.session.on_closed(now, why);
        self.drain_session_events();
    }

    fn drain_session_events(&mut self) {
        let mut joined = false;
        while let Some(ev) = self.session.poll_event() {
            joined |= matches!(ev, session::Event::Joined { .. });
            self.notes.push_back(Note::Session(ev));
        }
        if joined {
            self.start_waiting();
        }
    }

    fn flush_session(&mut self) {
        let out = self.session.take_output();
        if out.is_empty() {
            return;
        }
        if let Some(conn) = &self.conn {
            if let Err(e) = conn.with_outbox(|o| o.push_control(&out)) {
                self.notes.push_back(Note::Info(e.to_string()));
            }
        }
    }

    /// Starts waiting files whose room is joined, while slots are free.
    fn start_waiting(&mut self) {
        if self.finishing {
            return;
        }
        let Some(conn) = &self.conn else { return };
        let mut i = 0;
        while i < self.waiting.len() && self.sending.len() < MAX_SENDING {
            if !self.session.is_joined(&self.waiting[i].room) {
                i += 1;
                continue;
            }
            let mut file = self.waiting.remove(i).unwrap();
            let stream = loop {
                let s = self.next_stream;
                self.next_stream = self.next_stream.checked_add(1).unwrap_or(1);
                if !conn.with_outbox(|o| o.stream_in_use(s)) {
                    break s;
                }
            };
            file.stream = stream;
            self.sending.insert(
                file.id,
                Sending {
                    name: file.file_name.clone(),
                    size: file.size,
                    sent: file.sent.clone(),
                    started: Instant::now(),
                },
            );
            self.notes.push_back(Note::SendStarted {
                id: file.id,
                name: file.file_name.clone(),
                size: file.size,
                room: file.room.clone(),
            });
            conn.with_outbox(|o| o.push_file(file));
        }
    }
}

/// Bytes of `s` sent so far.
pub fn sent(s: &Sending) -> u64 {
    s.sent.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_waiting_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let mut rt = Runtime::new(Options {
            addr: "127.0.0.1:9".parse().unwrap(),
            session: session::Config::default(),
            dir: None,
            limits: Limits::default(),
            rate: None,
            connect_timeout: Duration::from_secs(1),
        });
        // Not connected: every file waits.
        for _ in 0..MAX_WAITING {
            rt.send_file("r", &path).unwrap();
        }
        assert_eq!(rt.waiting(), MAX_WAITING);
        let e = rt.send_file("r", &path).unwrap_err();
        assert!(e.contains("waiting already"), "{e}");
        assert_eq!(rt.cancel_all(), MAX_WAITING);
        assert_eq!(rt.waiting(), 0);
        rt.send_file("r", &path).unwrap();
    }
}
