//! The real thing: a child process appends with fsync while the parent SIGKILLs it at
//! random moments, many times; after each kill, every acknowledged record is there, once.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hunt_store::fs::RealFs;
use hunt_store::{Log, LogConfig};

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let kills = 12;
    for run in 0..kills {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hunt-store-torture"))
            .arg(dir.path())
            .arg(run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the child");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(30 + rng % 250));
        child.kill().expect("SIGKILL the child");
        let _ = child.wait();
        for line in reader.join().unwrap() {
            // A line cut by the kill is not an acknowledgement we can read; skip it.
            let mut parts = line.splitn(3, ' ');
            if let (Some("ACK"), Some(lsn), Some(payload)) =
                (parts.next(), parts.next(), parts.next())
                && let Ok(lsn) = lsn.parse()
            {
                acked.insert(payload.to_string(), lsn);
            }
        }
        // Reopen as the next start would, and check every acknowledgement.
        let (log, _) = Log::open(Arc::new(RealFs), LogConfig::new(dir.path())).expect("recovers");
        let mut by_payload: HashMap<String, Vec<u64>> = HashMap::new();
        for r in log.read_from(1).unwrap() {
            let r = r.expect("no corrupt record is returned");
            by_payload
                .entry(String::from_utf8(r.payload).unwrap())
                .or_default()
                .push(r.lsn);
        }
        for (payload, lsn) in &acked {
            let at = by_payload
                .get(payload)
                .unwrap_or_else(|| panic!("run {run}: acknowledged {payload} lost"));
            assert_eq!(
                at,
                &vec![*lsn],
                "run {run}: {payload} should be at lsn {lsn} once"
            );
        }
    }
    println!("kills={kills} acked={} lost=0", acked.len());
    assert!(
        acked.len() > 100,
        "the child should have acknowledged records: {}",
        acked.len()
    );
}
