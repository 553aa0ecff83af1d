//! What the fuzz targets under `tests/` share.

use proptest::prelude::ProptestConfig;

/// Proptest's settings for a fuzz target: `SYNCER_FUZZ_CASES` inputs (default 500, the
/// suite's small run; the long run sets 1000000), and no failure files written into the
/// source tree.
pub fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("SYNCER_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
