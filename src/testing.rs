//! Helpers shared by the unit tests of several modules (compiled for tests only).

use std::path::PathBuf;

/// A fresh, empty directory for one test: `tag`, the process and the instant make its
/// name unique, so tests running at once never share one.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rf-unit-{tag}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    std::fs::create_dir_all(&dir).expect("create a test directory");
    dir
}
