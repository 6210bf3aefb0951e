//! One client's session with a server, sans-io: the handshake, heartbeats at
//! the interval WELCOME grants, a dead server noticed, reconnects with
//! jittered exponential backoff, and the rooms joined again after each.
//!
//! The caller feeds it what happened (connected, a frame, the connection
//! lost, the time) and takes from it bytes to send ([`Session::take_output`]),
//! things to tell the user ([`Session::poll_event`]) and what to do next
//! ([`Session::poll_action`]). Time is the caller's: the tests run it on a
//! simulated clock.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use proto::{ErrorCode, Frame, Hello, Room, Welcome};

/// How a session behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our name, in HELLO.
    pub name: String,
    /// The heartbeat to ask for; 0 takes the server's.
    pub heartbeat_ms: u32,
    /// How long a connection may take to be welcomed.
    pub handshake_timeout: Duration,
    /// The first reconnect's delay; each failure doubles it.
    pub backoff_base: Duration,
    /// The most a reconnect waits.
    pub backoff_max: Duration,
    /// Reconnect at all (a `send` gives up instead).
    pub reconnect: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: String::new(),
            heartbeat_ms: 0,
            handshake_timeout: Duration::from_secs(5),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            reconnect: true,
        }
    }
}

/// What the caller should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Open a connection, then call [`Session::on_connected`] or
    /// [`Session::on_connect_failed`].
    Connect,
    /// Close the connection (it is dead or refused), then call
    /// [`Session::on_closed`].
    Close,
}

/// Why a connection ended, as the user is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// The TCP connection closed or failed.
    Closed(String),
    /// Nothing came from the server for its idle timeout: presumed dead.
    Silent(Duration),
    /// No WELCOME within the handshake timeout.
    NoWelcome,
    /// The server sent a fatal ERROR.
    Error(ErrorCode, String),
    /// The server sent GOAWAY.
    GoAway(ErrorCode, String),
}

/// What the user should hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Welcomed: the connection is up.
    Welcomed {
        /// The server's WELCOME.
        welcome: Welcome,
        /// Whether this is a reconnect.
        again: bool,
    },
    /// A room joined (`again`: after a reconnect, the server has it again).
    Joined {
        /// The room.
        room: String,
        /// Rejoined after a reconnect.
        again: bool,
    },
    /// A room left.
    Left {
        /// The room.
        room: String,
    },
    /// A JOIN refused (ERROR LIMIT: too many rooms); the room is dropped.
    JoinRefused {
        /// The room.
        room: String,
        /// The server's reason.
        reason: String,
    },
    /// A non-fatal ERROR (NOT_MEMBER, LIMIT, GAP).
    Refused {
        /// Its code.
        code: ErrorCode,
        /// Its reason.
        reason: String,
    },
    /// The connection ended; `retry_in` is when the next attempt comes, if any.
    Lost {
        /// Why.
        why: Lost,
        /// The delay before reconnecting; `None`: no reconnect.
        retry_in: Option<Duration>,
    },
    /// A connect attempt failed.
    ConnectFailed {
        /// The error.
        error: String,
        /// When the next comes, if any.
        retry_in: Option<Duration>,
    },
}

#[derive(Debug)]
enum State {
    /// Not connected; connect at `at` (None: never again).
    Down { at: Option<Instant> },
    /// A connect was asked for and has not been answered.
    Connecting,
    /// Connected, HELLO sent at `since`, no WELCOME yet.
    Greeting { since: Instant },
    /// Welcomed.
    Up {
        welcome: Welcome,
        last_rx: Instant,
        next_ping: Instant,
    },
    /// Told to close, waiting for [`Session::on_closed`].
    Closing,
}

/// One session, across reconnects.
pub struct Session {
    config: Config,
    state: State,
    /// Rooms wanted, and whether the server has answered JOINED on this connection.
    rooms: BTreeMap<String, bool>,
    /// JOINs sent on this connection and not yet answered, in order: the
    /// server answers each with JOINED or ERROR LIMIT, whose reason does not
    /// name the room.
    pending_joins: VecDeque<String>,
    /// Whether a connection was ever welcomed (later ones are reconnects).
    welcomed_once: bool,
    /// Whether this connection is a reconnect.
    reconnected: bool,
    failures: u32,
    /// Why the connection we are closing ended, and whether to reconnect.
    closing: Option<(Lost, bool)>,
    out: Vec<u8>,
    events: VecDeque<Event>,
    rng: fastrand::Rng,
}

impl Session {
    /// A session that will connect at once.
    pub fn new(config: Config, now: Instant, seed: u64) -> Session {
        Session {
            config,
            state: State::Down { at: Some(now) },
            rooms: BTreeMap::new(),
            pending_joins: VecDeque::new(),
            welcomed_once: false,
            reconnected: false,
            failures: 0,
            closing: None,
            out: Vec::new(),
            events: VecDeque::new(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The WELCOME of the connection, while up.
    pub fn welcome(&self) -> Option<&Welcome> {
        match &self.state {
            State::Up { welcome, .. } => Some(welcome),
            _ => None,
        }
    }

    /// Whether the connection is welcomed.
    pub fn is_up(&self) -> bool {
        self.welcome().is_some()
    }

    /// Whether the session has ended for good (no reconnect).
    pub fn is_over(&self) -> bool {
        matches!(self.state, State::Down { at: None })
    }

    /// Rooms wanted, with whether each is joined now.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, bool)> {
        self.rooms.iter().map(|(r, j)| (r.as_str(), *j))
    }

    /// Whether `room` is joined on this connection.
    pub fn is_joined(&self, room: &str) -> bool {
        self.rooms.get(room).copied().unwrap_or(false)
    }

    /// Bytes to send, in order.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The next event for the user.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next moment [`Session::poll_action`] may have something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Down { at } => *at,
            State::Greeting { since } => Some(*since + self.config.handshake_timeout),
            State::Up {
                welcome,
                last_rx,
                next_ping,
            } => Some((*next_ping).min(*last_rx + idle_timeout(welcome))),
            State::Connecting | State::Closing => None,
        }
    }

    /// Timers: connect when due, PING when due, a silent server closed.
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        match &mut self.state {
            State::Down { at: Some(at) } if *at <= now => {
                self.state = State::Connecting;
                Some(Action::Connect)
            }
            State::Greeting { since } if now >= *since + self.config.handshake_timeout => {
                Some(self.close(Lost::NoWelcome, true))
            }
            State::Up {
                welcome,
                last_rx,
                next_ping,
            } => {
                let idle = idle_timeout(welcome);
                if now >= *last_rx + idle {
                    return Some(self.close(Lost::Silent(idle), true));
                }
                if now >= *next_ping {
                    *next_ping = now + Duration::from_millis(u64::from(welcome.heartbeat_ms));
                    Frame::Ping(b"rr").encode_to_vec(&mut self.out).unwrap();
                }
                None
            }
            _ => None,
        }
    }

    /// The connection is open: HELLO goes first, then the rooms wanted.
    pub fn on_connected(&mut self, now: Instant) {
        self.state = State::Greeting { since: now };
        self.out.clear();
        Frame::Hello(Hello {
            heartbeat_ms: self.config.heartbeat_ms,
            name: crate::body::cut(&self.config.name, proto::MAX_NAME_LEN),
        })
        .encode_to_vec(&mut self.out)
        .unwrap();
        self.pending_joins.clear();
        for (room, joined) in &mut self.rooms {
            *joined = false;
            self.pending_joins.push_back(room.clone());
            Frame::Join(Room::new(room).unwrap())
                .encode_to_vec(&mut self.out)
                .unwrap();
        }
    }

    /// A connect attempt failed.
    pub fn on_connect_failed(&mut self, now: Instant, error: String) {
        let retry_in = self.schedule_retry(now, true);
        self.events
            .push_back(Event::ConnectFailed { error, retry_in });
    }

    /// The connection is closed (by us after [`Action::Close`], or by the
    /// peer, or by an error).
    pub fn on_closed(&mut self, now: Instant, error: String) {
        let (why, retry) = self.closing.take().unwrap_or((Lost::Closed(error), true));
        for joined in self.rooms.values_mut() {
            *joined = false;
        }
        let retry_in = self.schedule_retry(now, retry);
        self.events.push_back(Event::Lost { why, retry_in });
    }

    /// Stops for good: no reconnect.
    pub fn stop(&mut self) {
        self.config.reconnect = false;
        if let State::Down { at } = &mut self.state {
            *at = None;
        }
    }

    fn close(&mut self, why: Lost, retry: bool) -> Action {
        self.closing = Some((why, retry));
        self.state = State::Closing;
        Action::Close
    }

    fn schedule_retry(&mut self, now: Instant, retry: bool) -> Option<Duration> {
        if !retry || !self.config.reconnect {
            self.state = State::Down { at: None };
            return None;
        }
        let delay = self.backoff();
        self.failures = self.failures.saturating_add(1);
        self.state = State::Down {
            at: Some(now + delay),
        };
        Some(delay)
    }

    /// The delay before attempt `failures + 1`: base x 2^failures, capped,
    /// drawn uniformly from its upper half, so clients cut off together do
    /// not come back together (and never sooner than half the delay).
    pub fn backoff(&mut self) -> Duration {
        let full = self
            .config
            .backoff_base
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.config.backoff_max);
        let half = full / 2;
        half + half.mul_f64(self.rng.f64())
    }

    /// Wants `room`: JOIN it now if up, and again after every reconnect.
    pub fn join(&mut self, room: &str) -> Result<(), proto::Malformed> {
        let checked = Room::new(room)?;
        self.rooms.entry(room.to_string()).or_insert(false);
        if matches!(self.state, State::Greeting { .. } | State::Up { .. }) {
            self.pending_joins.push_back(room.to_string());
            Frame::Join(checked).encode_to_vec(&mut self.out).unwrap();
        }
        Ok(())
    }

    /// No longer wants `room`.
    pub fn leave(&mut self, room: &str) -> Result<(), proto::Malformed> {
        let checked = Room::new(room)?;
        if self.rooms.remove(room).is_some() && self.is_up() {
            Frame::Leave(checked).encode_to_vec(&mut self.out).unwrap();
        }
        Ok(())
    }

    /// A frame from the server. MESSAGE frames are the caller's: they come
    /// back as `Some`.
    pub fn on_frame<'a>(&mut self, now: Instant, frame: Frame<'a>) -> Option<proto::Message<'a>> {
        match &mut self.state {
            State::Up { last_rx, .. } => *last_rx = now,
            State::Greeting { .. } => {}
            // Frames read after we chose to close: nothing more to do.
            _ => return None,
        }
        match frame {
            Frame::Welcome(welcome) => {
                let again = self.welcomed_once;
                self.welcomed_once = true;
                self.reconnected = again;
                self.failures = 0;
                self.state = State::Up {
                    welcome,
                    last_rx: now,
                    next_ping: now + Duration::from_millis(u64::from(welcome.heartbeat_ms)),
                };
                self.events.push_back(Event::Welcomed { welcome, again });
            }
            Frame::Ping(payload) => {
                Frame::Pong(payload).encode_to_vec(&mut self.out).unwrap();
            }
            Frame::Pong(_) => {}
            Frame::Joined(room) => {
                if let Some(i) = self.pending_joins.iter().position(|r| r == room.as_str()) {
                    self.pending_joins.remove(i);
                }
                if let Some(joined) = self.rooms.get_mut(room.as_str()) {
                    if !*joined {
                        *joined = true;
                        self.events.push_back(Event::Joined {
                            room: room.as_str().to_string(),
                            again: self.reconnected,
                        });
                    }
                }
            }
            Frame::Left(room) => self.events.push_back(Event::Left {
                room: room.as_str().to_string(),
            }),
            Frame::Message(m) => return Some(m),
            Frame::Error(status)
                if status.code == ErrorCode::LIMIT && status.reason.contains("rooms") =>
            {
                // The oldest JOIN unanswered is the one refused.
                if let Some(room) = self.pending_joins.pop_front() {
                    if self.rooms.get(&room) == Some(&false) {
                        self.rooms.remove(&room);
                    }
                    self.events.push_back(Event::JoinRefused {
                        room,
                        reason: status.reason.to_string(),
                    });
                }
            }
            Frame::Error(status) if !status.code.is_fatal() => {
                self.events.push_back(Event::Refused {
                    code: status.code,
                    reason: status.reason.to_string(),
                });
            }
            Frame::Error(status) => {
                // The server closes after it; reconnect (with backoff) unless
                // it says our own frames are broken, which a retry repeats.
                let retry = !matches!(
                    status.code,
                    ErrorCode::MALFORMED | ErrorCode::UNKNOWN_TYPE | ErrorCode::FRAME_TOO_LARGE
                );
                self.closing = Some((Lost::Error(status.code, status.reason.to_string()), retry));
            }
            Frame::GoAway(status) => {
                self.closing = Some((Lost::GoAway(status.code, status.reason.to_string()), true));
            }
            // Frames only a client sends: the server never does.
            Frame::Hello(_) | Frame::Join(_) | Frame::Leave(_) | Frame::Publish(_) => {}
        }
        None
    }
}

fn idle_timeout(welcome: &Welcome) -> Duration {
    Duration::from_millis(u64::from(welcome.idle_timeout_ms.max(welcome.heartbeat_ms)))
}

#[cfg(test)]
mod tests;
