//! What the binary writes to stderr when stderr is a pipe, as under `kubectl logs`, journald or
//! `2>file`: plain text, no terminal escape codes.

use std::process::Command;

#[test]
fn logs_to_a_pipe_carry_no_escape_codes() {
    // A kubeconfig that does not exist makes the controller log an error and exit at once,
    // without root, a network or an API server.
    let out = Command::new(env!("CARGO_BIN_EXE_lvs-operator"))
        .args(["controller", "--kubeconfig", "/nonexistent/kubeconfig"])
        // Without NO_COLOR, so that only the pipe turns colour off.
        .env_remove("NO_COLOR")
        .env_remove("LVS_LOG_FORMAT")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("ERROR") && stderr.contains("reading kubeconfig /nonexistent/kubeconfig"),
        "the controller logged its error: {stderr}"
    );
    assert!(
        !out.stderr.contains(&0x1b),
        "no ANSI escape in logs to a pipe: {stderr:?}"
    );
}
