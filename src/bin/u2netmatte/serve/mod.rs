// SPDX-License-Identifier: MPL-2.0
//! `u2netmatte serve`: rembg's HTTP API and a drag-and-drop page, every
//! request through one shared model session (see `bridge`).
//!
//! What a request costs is bounded: its body (--max-body-mb), its pixels
//! (--max-megapixels, read from the header before decoding), the time its
//! client takes to send its headers and then its body (--body-timeout) and
//! the time it takes in all (--request-timeout); the connections open at
//! once (--max-connections); the requests in the service at once, from
//! their bodies read to their answers (--max-queue): one more gets 503 with
//! Retry-After at once, never a wait without end. SIGTERM or Ctrl-C stops
//! taking connections and lets those in flight finish, within
//! --body-timeout + --request-timeout.

mod bridge;
mod linger;
mod listen;
mod metrics;
mod options;
mod page;
mod routes;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::{Format, LookArgs, ModelArgs};
use bridge::Bridge;
use metrics::Metrics;
use options::Asked;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; 0.0.0.0 for every interface.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (rembg's is 7000 too); 0: any free port.
    #[arg(long, default_value_t = 7000)]
    pub port: u16,
    /// Requests in the service at once (read, decoded, waiting for or in
    /// the model, encoded); one more gets 503 with Retry-After.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_queue: u32,
    /// Largest request body, in MB.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_body_mb: u64,
    /// Largest image, in megapixels (width x height / 1e6), refused from
    /// its header before it is decoded.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub max_megapixels: u64,
    /// Seconds a request may take from its arrival to its response.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout: u64,
    /// Seconds a client may take to send its request's headers, and again
    /// its body.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout: u64,
    /// Connections open at once; past this, new ones wait to be accepted.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Threads decoding and encoding images (default: every core).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// What a request gets when it asks for nothing else.
    #[command(flatten)]
    pub look: LookArgs,
}

/// What every request shares.
pub struct Service {
    bridge: Bridge,
    metrics: Arc<Metrics>,
    /// One per request in the service (--max-queue), from its body read
    /// to its response.
    admitted: Arc<Semaphore>,
    /// One per request sending its body (twice --max-queue).
    reading: Arc<Semaphore>,
    /// Decoding and encoding at once: no more than the cores, so that a
    /// burst does not slow every request down together.
    codec_turns: Arc<Semaphore>,
    defaults: Asked,
    model_name: String,
    max_pixels: u64,
    request_timeout: Duration,
    body_timeout: Duration,
    /// Largest request body, in bytes (--max-body-mb).
    body_limit: usize,
    max_queue: usize,
}

impl Service {
    fn new(args: &ServeArgs) -> Self {
        let metrics = Arc::new(Metrics::new(args.max_queue as usize));
        let on_batch = Arc::clone(&metrics);
        let jobs = args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        Self {
            bridge: Bridge::new(
                args.model.clone(),
                Arc::new(move |id, frames| on_batch.model_run(id, frames)),
            ),
            metrics,
            admitted: Arc::new(Semaphore::new(args.max_queue as usize)),
            reading: Arc::new(Semaphore::new(2 * args.max_queue as usize)),
            codec_turns: Arc::new(Semaphore::new(jobs)),
            defaults: Asked {
                look: args.look,
                format: Format::Png,
            },
            model_name: args.model.model.clone(),
            max_pixels: args.max_megapixels * 1_000_000,
            request_timeout: Duration::from_secs(args.request_timeout),
            body_timeout: Duration::from_secs(args.body_timeout),
            body_limit: usize::try_from(args.max_body_mb * 1_000_000).unwrap_or(usize::MAX),
            max_queue: args.max_queue as usize,
        }
    }
}

/// SIGTERM or SIGINT (Ctrl-C); the handlers are in place from the call,
/// so that a signal right after the service says it listens is not lost.
/// A second signal while the requests in flight finish ends at once.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        eprintln!("u2netmatte serve: stopping: finishing the requests in flight");
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            eprintln!("u2netmatte serve: stopped at once (a second signal)");
            std::process::exit(1);
        });
    })
}

pub fn main(args: &ServeArgs) -> ExitCode {
    if let Err(e) = crate::element::init() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let service = Arc::new(Service::new(args));
    // The model loads now: one that cannot is an error before any client.
    if let Err(e) = service.bridge.start(args.look) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the service's threads: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(async {
        let address = format!("{}:{}", args.host, args.port);
        let stop = match shutdown_signal() {
            Ok(stop) => stop,
            Err(e) => {
                eprintln!("error: cannot take signals: {e}");
                return ExitCode::from(2);
            }
        };
        let listener = match tokio::net::TcpListener::bind(&address).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {address}: {e}");
                return ExitCode::from(2);
            }
        };
        let bound: SocketAddr = listener
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        eprintln!("u2netmatte serve: listening on http://{bound}");
        let app = routes::router(Arc::clone(&service));
        // Every request ends within --body-timeout (its headers) plus
        // --request-timeout (the rest); a connection open past that (a
        // client not reading its answer) does not keep the process alive.
        let grace = service.body_timeout + service.request_timeout + Duration::from_secs(5);
        let limits = listen::Limits {
            header_timeout: service.body_timeout,
            write_timeout: service.body_timeout,
            max_connections: args.max_connections as usize,
            grace,
        };
        match listen::serve(listener, app, limits, stop).await {
            listen::Stopped::Cleanly => ExitCode::SUCCESS,
            listen::Stopped::Overdue { still_open } => {
                eprintln!(
                    "error: {still_open} connections still open {} s after the stop: closing them",
                    grace.as_secs()
                );
                ExitCode::from(1)
            }
        }
    });
    // Off the async threads: stopping a pipeline waits for its threads.
    service.bridge.stop();
    drop(runtime);
    eprintln!("u2netmatte serve: stopped");
    code
}
