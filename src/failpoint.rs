//! Failpoints for the fault-injection tests: in a debug build (what `cargo
//! test` runs), `TROOPS_FAILPOINT=NAME` stops troops at the point named NAME,
//! after saying so on stderr, so that a test can kill it exactly there.
//! Release builds (the package) compile every failpoint to nothing.

/// Stops here forever when this is the failpoint the test asked for.
pub fn hit(name: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    if std::env::var_os("TROOPS_FAILPOINT").is_some_and(|wanted| wanted == name) {
        eprintln!("troops: failpoint {name}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
