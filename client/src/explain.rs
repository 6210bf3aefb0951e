//! What the server's ERROR and GOAWAY codes mean to a person, what to do
//! about them, and the exit codes scripts can rely on.

use proto::ErrorCode;

/// Exit codes of every `ringroom` subcommand.
pub mod exit {
    /// Everything asked for was done.
    pub const OK: u8 = 0;
    /// Something asked for failed: a file not sent or not received intact.
    pub const FAILED: u8 = 1;
    /// The command line is wrong.
    pub const USAGE: u8 = 2;
    /// No server: discovery found none, or the connection could not be made.
    pub const NO_SERVER: u8 = 3;
    /// The server ended the session (a fatal ERROR, or GOAWAY) and we do not retry.
    pub const SERVER_ENDED: u8 = 4;
    /// Stopped by Ctrl-C or SIGTERM.
    pub const INTERRUPTED: u8 = 130;
}

/// One line on what `code` means and what to do.
pub fn explain(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::FRAME_TOO_LARGE => {
            "a frame was larger than the server accepts: a bug in this client (report it), \
             or a server whose --max-payload changed"
        }
        ErrorCode::UNKNOWN_TYPE => {
            "the server does not know a frame this client sent: the server is older than \
             this client; upgrade it"
        }
        ErrorCode::MALFORMED => {
            "the server could not parse a frame from this client: a client bug; report it \
             with the reason"
        }
        ErrorCode::NOT_MEMBER => "you are not in that room: /join it first",
        ErrorCode::LIMIT => {
            "a server limit was reached (rooms per connection: /leave one; rooms on the \
             server; files at once: wait for one to finish)"
        }
        ErrorCode::SLOW_CONSUMER => {
            "this client did not take its messages fast enough (a slow disk or terminal, a \
             suspended process); reconnecting"
        }
        ErrorCode::HEARTBEAT_TIMEOUT => {
            "the server heard nothing from this client for its idle timeout (a suspended \
             laptop, a stalled network); reconnecting"
        }
        ErrorCode::SHUTTING_DOWN => {
            "the server is stopping (a restart or maintenance); reconnecting with backoff"
        }
        ErrorCode::OVERLOADED => {
            "the server is at its connection limit, or holds too much unfinished data; \
             retrying later (or try another server)"
        }
        ErrorCode::GAP => {
            "messages to this room from other nodes of the cluster may have been lost \
             (a NATS link dropped); messages after this line are complete again"
        }
        _ => "a code this client does not know: the server is newer than this client",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_own_explanation() {
        let mut seen: Vec<&str> = ErrorCode::ALL.iter().map(|c| explain(*c)).collect();
        seen.push(explain(ErrorCode(999)));
        let n = seen.len();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), n);
    }
}
