// SPDX-License-Identifier: MPL-2.0
//! Accepting connections: HTTP/1.1 on hyper, with what `axum::serve` leaves
//! out: time limits on reading a request's headers and on writing to the
//! client (a client trickling headers, or never reading its answer, would
//! hold its connection for ever), a bound on the connections open at once,
//! and a deadline on the graceful stop.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;

pub struct Limits {
    /// From a connection's accept (or its last answer) to the end of the
    /// next request's headers: also how long an idle keep-alive
    /// connection stays open.
    pub header_timeout: Duration,
    /// The longest a write to the client may wait for it to read.
    pub write_timeout: Duration,
    /// Open connections; past this, the next waits in the listen backlog.
    pub max_connections: usize,
    /// After the stop, how long open connections may go on.
    pub grace: Duration,
}

/// How the service ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection finished after the stop.
    Cleanly,
    /// Some were still open when the grace ran out (they close when the
    /// runtime does).
    Overdue { still_open: usize },
}

/// Serves `app` on `listener` until `stop` completes, then stops listening
/// and lets the connections in flight finish, within `limits.grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> Stopped {
    let graceful = GracefulShutdown::new();
    let places = limits.max_connections.max(1);
    let open = Arc::new(Semaphore::new(places));
    let mut stop = pin!(stop);
    loop {
        let place = tokio::select! {
            place = Arc::clone(&open).acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    // Out of file descriptors, most often: the connections
                    // open now have to close first.
                    eprintln!("u2netmatte serve: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Answers are small writes after long waits: send them at once.
        let _ = socket.set_nodelay(true);
        let mut socket = TimeoutStream::new(socket);
        socket.set_write_timeout(Some(limits.write_timeout));
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(
                TokioIo::new(Box::pin(socket)),
                TowerToHyperService::new(app.clone()),
            );
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            // A client gone or too slow: nothing to answer.
            let _ = watched.await;
            drop(place);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => Stopped::Cleanly,
        () = tokio::time::sleep(limits.grace) => Stopped::Overdue {
            still_open: places - open.available_permits(),
        },
    }
}
