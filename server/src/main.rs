//! `ringroom-server`: see `ringroom-server --help` and the README.
#![forbid(unsafe_code)]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ringroom_server::server::main(argh::from_env())
}
