//! Mistakes on the server's command line: each is refused before anything
//! starts, with a message that names the option and what it accepts.

mod common;

#[test]
fn bad_options_are_refused_with_the_option_named() {
    let cases: [(&[&str], &str); 5] = [
        (&["--shards", "0"], "--shards must be at least 1"),
        (
            &["--buffers", "65536"],
            "--buffers must be a power of two up to 32768, not 65536",
        ),
        (&["--buffers", "99999999999"], "--buffers"),
        (
            &["--stream-window", "1000"],
            "--stream-window (1000) must hold at least one frame",
        ),
        (
            &["--partial-bytes", "10"],
            "--partial-bytes (10) must hold at least one frame",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec![
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "off",
            "--discovery",
            "off",
        ];
        all.extend_from_slice(args);
        let (status, out, err) = common::run_to_exit(&all);
        assert!(!status.success(), "{args:?} was accepted");
        assert!(!out.contains("ready"), "{args:?}: {out}");
        assert!(
            err.contains(want) || out.contains(want),
            "{args:?}: {err}{out}"
        );
    }
}
