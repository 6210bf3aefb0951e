//! `loadgen`: the ringroom load generator. See the README.
//!
//! `loadgen [options]` runs a scenario (idle, ping, rooms, or the presets c10k
//! and c100k) against `--target` or, without it, a server of its own: this same
//! binary re-executed with `--internal-server` (the server's options follow).
//! Subcommands: `compare A B`, `merge DIR...`, `report DIR`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use argh::FromArgs;
use loadgen::cli::Args;
use loadgen::results::RunRecord;
use loadgen::run::{default_out, run};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some("--internal-server") {
        return internal_server(&raw[2..]);
    }
    // `loadgen --help | head`, `loadgen compare A B | head`: end quietly when
    // the reader goes, like any Unix tool (the server above keeps ignoring
    // SIGPIPE: its metrics endpoint writes to sockets).
    engine::sys::restore_default_sigpipe();
    if let Some(sub @ ("compare" | "merge" | "report")) = raw.get(1).map(String::as_str) {
        let rest: Vec<&str> = raw[2..].iter().map(String::as_str).collect();
        let command = format!("loadgen {sub}");
        let result = match sub {
            "compare" => parse::<CompareArgs>(&command, &rest).map(|a| compare_cmd(&a)),
            "merge" => parse::<MergeArgs>(&command, &rest).map(|a| merge_cmd(&a).map(|()| false)),
            _ => parse::<ReportArgs>(&command, &rest).map(|a| report_cmd(&a).map(|()| false)),
        };
        return match result {
            Err(code) => code,
            Ok(Ok(false)) => ExitCode::SUCCESS,
            Ok(Ok(true)) => ExitCode::from(1),
            Ok(Err(e)) => {
                eprintln!("{command}: {e}");
                ExitCode::from(2)
            }
        };
    }
    let args: Args = argh::from_env();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(1)
        }
    }
}

/// This binary, run as the server: `loadgen --internal-server [server options]`.
fn internal_server(rest: &[String]) -> ExitCode {
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match <ringroom_server::config::Args as FromArgs>::from_args(&["ringroom-server"], &rest) {
        Ok(args) => ringroom_server::server::main(args),
        Err(early) => {
            println!("{}", early.output);
            ExitCode::from(u8::from(early.status.is_err()))
        }
    }
}

/// A subcommand's arguments, or the exit code of `--help` or a usage error.
fn parse<T: FromArgs>(command: &str, rest: &[&str]) -> Result<T, ExitCode> {
    T::from_args(&[command], rest).map_err(|early| {
        println!("{}", early.output);
        ExitCode::from(if early.status.is_err() { 2 } else { 0 })
    })
}

/// loadgen compare: is run B slower than run A? Exits 1 on a regression, 2 on
/// an error.
#[derive(FromArgs)]
struct CompareArgs {
    /// the baseline: a result folder (what loadgen --out wrote), a release
    /// folder of them, or a release name under bench-results/
    #[argh(positional)]
    a: std::path::PathBuf,

    /// what to judge, the same way; releases are compared scenario by
    /// scenario (those present in both)
    #[argh(positional)]
    b: std::path::PathBuf,

    /// smallest slowdown of the median interval p99 that counts, relative
    /// (default 0.1: 10 %)
    #[argh(option, default = "0.1")]
    threshold: f64,

    /// smallest rise of the whole run's p99 or p99.9 that counts, relative,
    /// where the interval test cannot see it (default 1.0: doubled; a shared
    /// VM's tails swing by half between runs of the same build)
    #[argh(option, default = "1.0")]
    tail_threshold: f64,

    /// significance level of the Mann-Whitney U test (default 0.01)
    #[argh(option, default = "0.01")]
    alpha: f64,

    /// write both runs' percentile curves to this SVG file
    #[argh(option)]
    plot: Option<std::path::PathBuf>,
}

/// The result folders `arg` names: itself if it holds a summary.json, else its
/// subfolders that do (a release), else the same under bench-results/.
fn result_folders(arg: &std::path::Path) -> Result<Vec<(String, std::path::PathBuf)>, String> {
    let runs_in = |dir: &std::path::Path| -> Vec<(String, std::path::PathBuf)> {
        if dir.join("summary.json").is_file() {
            return vec![(String::new(), dir.to_path_buf())];
        }
        let mut runs: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("summary.json").is_file())
            .map(|p| {
                (
                    p.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    p,
                )
            })
            .collect();
        runs.sort();
        runs
    };
    let mut runs = runs_in(arg);
    if runs.is_empty() && arg.is_relative() {
        runs = runs_in(&std::path::Path::new("bench-results").join(arg));
    }
    if runs.is_empty() {
        return Err(format!(
            "{}: no summary.json in it, its subfolders, or bench-results/{0}",
            arg.display()
        ));
    }
    Ok(runs)
}

fn compare_cmd(args: &CompareArgs) -> Result<bool, String> {
    let (a, b) = (result_folders(&args.a)?, result_folders(&args.b)?);
    let pairs: Vec<(String, &std::path::Path, &std::path::Path)> = if a.len() == 1 && b.len() == 1 {
        vec![(String::new(), a[0].1.as_path(), b[0].1.as_path())]
    } else {
        a.iter()
            .filter_map(|(name, pa)| {
                let (_, pb) = b.iter().find(|(n, _)| n == name)?;
                Some((name.clone(), pa.as_path(), pb.as_path()))
            })
            .collect()
    };
    if pairs.is_empty() {
        return Err("no scenario is in both".into());
    }
    let mut regressed = Vec::new();
    for (scenario, pa, pb) in &pairs {
        if !scenario.is_empty() {
            println!("\n## {scenario}\n");
        }
        let plot = args.plot.as_ref().map(|p| {
            if scenario.is_empty() {
                p.clone()
            } else {
                p.with_file_name(format!(
                    "{}-{scenario}.svg",
                    p.file_stem().unwrap_or_default().to_string_lossy()
                ))
            }
        });
        if loadgen::compare::compare_folders(
            pa,
            pb,
            loadgen::compare::Thresholds {
                median: args.threshold,
                tail: args.tail_threshold,
                alpha: args.alpha,
            },
            plot.as_deref(),
        )? {
            regressed.push(scenario.clone());
        }
    }
    if pairs.len() > 1 {
        println!(
            "\n{} scenario(s) compared; regressed: {}",
            pairs.len(),
            if regressed.is_empty() {
                "none".to_string()
            } else {
                regressed.join(", ")
            }
        );
    }
    Ok(!regressed.is_empty())
}

/// loadgen merge: adds up the results of load-generator processes that drove
/// one server at the same time, into one result folder.
#[derive(FromArgs)]
struct MergeArgs {
    /// result folders to add up
    #[argh(positional)]
    dirs: Vec<std::path::PathBuf>,

    /// folder for the merged result (default: bench-results/local/merged-TIMESTAMP/)
    #[argh(option)]
    out: Option<std::path::PathBuf>,
}

fn merge_cmd(args: &MergeArgs) -> Result<(), String> {
    if args.dirs.len() < 2 {
        return Err("give at least two result folders".into());
    }
    let runs = args
        .dirs
        .iter()
        .map(|d| RunRecord::read(d))
        .collect::<Result<Vec<_>, _>>()?;
    let names: Vec<String> = args.dirs.iter().map(|d| d.display().to_string()).collect();
    let merged = loadgen::results::merge(&runs, &names)?;
    let out = args.out.clone().unwrap_or_else(|| default_out("merged"));
    merged
        .write(&out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    println!("{}", loadgen::results::describe_merged(&merged));
    println!("results in {}", out.display());
    Ok(())
}

/// loadgen report: rewrites DIR/README.md, the index of the result folders in
/// DIR, or prints the table of a peers folder.
#[derive(FromArgs)]
struct ReportArgs {
    /// the results root (bench-results/)
    #[argh(positional)]
    dir: std::path::PathBuf,

    /// print the index instead of writing DIR/README.md
    #[argh(switch)]
    stdout: bool,

    /// DIR is a folder of peer-server runs (bench-results/peers.sh): print
    /// their side-by-side table
    #[argh(switch)]
    peers: bool,
}

fn report_cmd(args: &ReportArgs) -> Result<(), String> {
    if args.peers {
        print!("{}", loadgen::index::render_peers(&args.dir)?);
        return Ok(());
    }
    let page = loadgen::index::render(&loadgen::index::collect(&args.dir)?);
    if args.stdout {
        print!("{page}");
        return Ok(());
    }
    let path = args.dir.join("README.md");
    std::fs::write(&path, page).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
