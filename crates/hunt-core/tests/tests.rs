//! hunt-core's integration tests, one binary: `mod` per area.

mod engine;
mod examples;
mod ingest;
mod model;
mod plan;
mod rewards;
mod validation;

use std::sync::Arc;

use hunt_core::catalog::Catalog;

/// Loads a hunts file that must be valid, or fails the test with its diagnostics.
pub fn load(src: &str) -> Arc<Catalog> {
    match Catalog::load("test.yaml", src) {
        Ok((c, _)) => Arc::new(c),
        Err(r) => panic!("{:#?}", r.problems),
    }
}
