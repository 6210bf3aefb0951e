//! ringroom-server: a chat-room / push server for very many long-lived TCP
//! connections, with one pinned io_uring event loop (a *shard*) per core.
//!
//! * [`config`]: the command line and the capacity plan.
//! * [`core`]: the sans-io shard logic — connections, protocol, timers, queues.
//! * [`wheel`] and [`outq`]: the timing wheel and the bounded send queue it uses.
//! * [`rooms`]: room membership per shard and the server-wide room registry.
//! * [`broadcast`]: a MESSAGE encoded once and shared.
//! * [`channel`]: the bounded inboxes and outboxes that carry it between shards.
//! * [`engine`]: the io_uring ring behind a narrow safe API (all `unsafe` is there).
//! * [`shard`]: one shard's event loop, joining engine and core.
//! * [`metrics`]: per-shard counters, Prometheus text and the stderr summary.
//! * [`discovery`]: the UDP discovery responder.
//! * [`portcheck`]: one server per address (listeners of other processes on our port).
//! * [`flow`]: stream flow control, a publisher paced by its slowest reader.
//! * [`server`]: start-up checks, listeners, threads, signals and shutdown.
#![forbid(unsafe_code)]

pub mod broadcast;
pub mod channel;
pub mod cluster;
pub mod config;
pub use engine;
pub mod core;
pub mod discovery;
pub mod flow;
pub mod metrics;
pub mod outq;
pub mod portcheck;
pub mod rooms;
pub mod server;
pub mod shard;
pub mod wheel;
