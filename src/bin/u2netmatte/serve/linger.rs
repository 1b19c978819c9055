// SPDX-License-Identifier: MPL-2.0
//! Reading and dropping the body of a request refused before its body was
//! read, so that the client gets to read the answer.
//!
//! Most clients (rembg's Python ones, this project's tests) send the whole
//! body before they read anything. A socket closed with bytes unread is
//! reset, and the reset can break the client's write or reach it before the
//! answer, which it then never sees: the client reports a broken
//! connection, not the 503 or 400 it was sent. So the answer goes out at
//! once and the body is read to its end behind it, bounded in time and
//! size, as web servers' "lingering close" does.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Body as _, Frame, SizeHint};

/// How long a request's body may still be read behind its answer, from
/// the request's arrival (--body-timeout).
#[derive(Clone, Copy)]
pub struct Lingering(pub std::time::Duration);

/// Every request's body: one its handler answered before reading to the
/// end (a 404 or 405 with a body, the body limit's 413, an upload refused
/// after its first part) is read to its end behind the answer, which
/// closes the connection. Without this, a client still sending is reset
/// and never sees why (nginx's and Apache's "lingering close" do the same;
/// bounded in time only, as theirs are: a client that sends past the
/// deadline is cut off).
pub async fn linger_layer(
    State(lingering): State<Lingering>,
    request: Request,
    next: Next,
) -> Response {
    let deadline = tokio::time::Instant::now() + lingering.0;
    let awaits_continue = awaits_continue(&request);
    let dropped_unread = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&dropped_unread);
    let request = request.map(|body| {
        Body::new(DrainOnDrop {
            body: Some(body),
            polled: false,
            awaits_continue,
            deadline,
            dropped_unread: flag,
        })
    });
    let mut response = next.run(request).await;
    if dropped_unread.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A client waiting for "100 Continue" sends no body when the answer comes
/// first; reading would ask it for one.
fn awaits_continue(request: &Request) -> bool {
    request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// A body that, dropped before its end, is read to its end in a task of
/// its own (see [`linger_layer`]).
struct DrainOnDrop {
    body: Option<Body>,
    /// Read from at all: a client waiting for "100 Continue" was then
    /// asked for its body, and sends it.
    polled: bool,
    awaits_continue: bool,
    deadline: tokio::time::Instant,
    dropped_unread: Arc<AtomicBool>,
}

impl hyper::body::Body for DrainOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        this.polled = true;
        match this.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for DrainOnDrop {
    fn drop(&mut self) {
        let Some(body) = self.body.take() else { return };
        if body.is_end_stream() || (self.awaits_continue && !self.polled) {
            return;
        }
        // Dropped outside a runtime (a test's): nothing to read it on.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.dropped_unread.store(true, Ordering::Relaxed);
        let deadline = self.deadline;
        runtime.spawn(async move {
            let _ = tokio::time::timeout_at(deadline, drain(body, usize::MAX)).await;
        });
    }
}

/// Reads `request`'s body to its end in a task of its own and drops what
/// it reads; gives up at `deadline` or past `limit` bytes, closing the
/// connection then. The task holds only the body, never the bytes.
pub fn drain_in_background(request: Request, deadline: tokio::time::Instant, limit: usize) {
    if awaits_continue(&request) {
        return;
    }
    let body = request.into_body();
    tokio::spawn(async move {
        let _ = tokio::time::timeout_at(deadline, drain(body, limit)).await;
    });
}

/// Reads up to `limit` bytes of `body` and drops them; the length read.
async fn drain(mut body: Body, limit: usize) -> usize {
    let mut read = 0;
    while read <= limit {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
            // The end, or the client went away.
            None | Some(Err(_)) => break,
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use axum::body::Bytes;
    use hyper::body::Frame;

    use super::*;

    /// `chunks` chunks of 1000 bytes; counts those taken.
    struct Chunks {
        left: usize,
        taken: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl hyper::body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            self.left -= 1;
            self.taken
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0u8; 1000])))))
        }
    }

    fn chunks(n: usize) -> (Body, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let taken = std::sync::Arc::default();
        let body = Chunks {
            left: n,
            taken: std::sync::Arc::clone(&taken),
        };
        (Body::new(body), taken)
    }

    #[tokio::test]
    async fn a_body_is_read_to_its_end() {
        let (body, taken) = chunks(10);
        assert_eq!(drain(body, 1 << 20).await, 10_000);
        assert_eq!(taken.load(std::sync::atomic::Ordering::Relaxed), 10);
    }

    #[tokio::test]
    async fn reading_stops_at_the_first_chunk_past_the_limit() {
        let (body, taken) = chunks(10);
        assert_eq!(drain(body, 2500).await, 3000);
        assert_eq!(taken.load(std::sync::atomic::Ordering::Relaxed), 3);
    }
}
