//! Test fixtures shared by the integration tests (`tests/it`), the end-to-end tests
//! (`tests/e2e`) and the benchmark (`bench/`): [`scripted`] is a scripted XEP-0114 server
//! and a recording webhook around the bridge binary; [`e2e`] runs the bridge between a
//! throwaway XMPP server, [`prosody`] or [`ejabberd`], a webhook and a real XMPP client.
//! Nothing here is part of the product.

pub mod e2e;
pub mod ejabberd;
pub mod postgres;
pub mod prosody;
pub mod scripted;

use std::path::PathBuf;

/// The `component-http` binary of this build: beside the running executable (a benchmark in
/// `target/release`) or one directory up (a test in `target/debug/deps`). Cargo builds it for
/// the package's integration tests; `cargo build --workspace` builds it for the benchmark.
pub fn bridge_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running executable");
    let beside = exe.with_file_name("component-http");
    if beside.exists() {
        return beside;
    }
    let above = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("component-http"));
    match above {
        Some(path) if path.exists() => path,
        _ => panic!(
            "the component-http binary is not beside {} nor one directory up: build it with `cargo build --workspace`",
            exe.display()
        ),
    }
}
