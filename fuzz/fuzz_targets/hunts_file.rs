//! Any text as a hunts file: a catalog or a report of errors, never a panic; a valid
//! file's own test cases run too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match hunt_core::catalog::Catalog::load("fuzz.yaml", &text) {
        Ok((catalog, _)) => {
            let catalog = Arc::new(catalog);
            for case in &catalog.tests {
                let _ = hunt_core::testing::run_case(&catalog, case);
            }
        }
        Err(report) => {
            assert!(report.errors() > 0);
            let _ = report.to_json();
        }
    }
});
