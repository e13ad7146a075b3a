//! Raw JetStream publishing, for the cluster's ingest benchmark (docs/benchmarks.md):
//! how fast a replicated stream takes messages with nothing of the engine around it.
//!
//! ```sh
//! cargo run --release -p hunt-cluster --example raw_publish -- \
//!     --servers nats://127.0.0.1:4222 --body FILE [--replicas 3] [--clients 4] [--seconds 20]
//! ```
//!
//! Creates the stream `RAWBENCH` (file storage, the replicas asked; deleted first if it
//! exists), then each client publishes the body of FILE again and again to a subject of
//! its own, waiting for each acknowledgement before the next, as a client of the engine
//! waits for its answer. Prints messages/s and bytes/s.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let servers = arg(&args, "--servers").ok_or("--servers URL[,URL…] is needed")?;
    let body = std::fs::read(arg(&args, "--body").ok_or("--body FILE is needed")?)?;
    let replicas: usize = arg(&args, "--replicas").map_or(Ok(3), |v| v.parse())?;
    let clients: usize = arg(&args, "--clients").map_or(Ok(4), |v| v.parse())?;
    let seconds: u64 = arg(&args, "--seconds").map_or(Ok(20), |v| v.parse())?;
    let urls: Vec<String> = servers.split(',').map(str::to_string).collect();
    let client = async_nats::connect(urls).await?;
    let js = jetstream::new(client);
    let _ = js.delete_stream("RAWBENCH").await;
    js.create_stream(stream::Config {
        name: "RAWBENCH".into(),
        subjects: vec!["rawbench.>".into()],
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let body = bytes::Bytes::from(body);
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (js, body) = (js.clone(), body.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    js.publish(format!("rawbench.{c}"), body.clone())
                        .await
                        .expect("publish")
                        .await
                        .expect("acknowledged");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "messages={total} seconds={secs:.1} messages_per_s={:.0} bytes_per_s={:.0} body_bytes={}",
        total as f64 / secs,
        total as f64 * body.len() as f64 / secs,
        body.len()
    );
    js.delete_stream("RAWBENCH").await?;
    Ok(())
}
