// SPDX-License-Identifier: MPL-2.0
//! Reading and dropping the body of a request answered before its body was
//! read to its end, so that the client gets to read the answer.
//!
//! Most clients (rembg's Python ones, this project's tests) send the whole
//! body before they read anything. A socket closed with bytes unread is
//! reset, and the reset can break the client's write or reach it before the
//! answer, which it then never sees: the client reports a broken
//! connection, not the 503, 413 or 400 it was sent. So the answer goes out
//! at once and the body is read to its end behind it, bounded in time, as
//! web servers' "lingering close" does.

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
/// end (a 404 or 405 with a body, the body limit's 413, a refusal before
/// the body) is read to its end behind the answer, which closes the
/// connection (it cannot carry another request before that body's end). Without this, a client still sending is reset
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
    let left_unread = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&left_unread);
    let request = request.map(|body| {
        Body::new(DrainOnDrop {
            body: Some(body),
            ended: false,
            polled: false,
            awaits_continue,
            deadline,
            left_unread: flag,
        })
    });
    let mut response = next.run(request).await;
    if left_unread.load(Ordering::Relaxed) {
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
    /// Read to its end (or failed): a chunked body never says so by
    /// itself (its length is unknown), so what was read tells.
    ended: bool,
    /// Read from at all: a client waiting for "100 Continue" was then
    /// asked for its body, and sends it.
    polled: bool,
    awaits_continue: bool,
    deadline: tokio::time::Instant,
    /// Set when dropped before its end, read behind or not.
    left_unread: Arc<AtomicBool>,
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
        let frame = match this.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        };
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.as_ref().is_none_or(|b| b.is_end_stream())
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
        if self.ended || body.is_end_stream() {
            return;
        }
        self.left_unread.store(true, Ordering::Relaxed);
        if self.awaits_continue && !self.polled {
            return;
        }
        // Dropped outside a runtime (a test's): nothing to read it on.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let deadline = self.deadline;
        runtime.spawn(async move {
            let _ = tokio::time::timeout_at(deadline, drain(body)).await;
        });
    }
}

/// Reads `body` to its end (or until the client goes away) and drops
/// what it reads, a frame at a time; the length read.
async fn drain(mut body: Body) -> usize {
    let mut read = 0;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
            // The end, or the client went away.
            None | Some(Err(_)) => return read,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// `chunks` chunks of 1000 bytes; counts those taken.
    struct Chunks {
        left: usize,
        taken: Arc<AtomicUsize>,
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
            self.taken.fetch_add(1, Ordering::Relaxed);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0u8; 1000])))))
        }
    }

    fn chunks(n: usize) -> (Body, Arc<AtomicUsize>) {
        let taken = Arc::default();
        let body = Chunks {
            left: n,
            taken: Arc::clone(&taken),
        };
        (Body::new(body), taken)
    }

    #[tokio::test]
    async fn a_body_is_read_to_its_end() {
        let (body, taken) = chunks(10);
        assert_eq!(drain(body).await, 10_000);
        assert_eq!(taken.load(Ordering::Relaxed), 10);
    }

    /// `body` as the layer wraps it; the flag it sets when left unread.
    fn wrapped(body: Body, awaits_continue: bool) -> (DrainOnDrop, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        let wrapped = DrainOnDrop {
            body: Some(body),
            ended: false,
            polled: false,
            awaits_continue,
            deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(5),
            left_unread: Arc::clone(&flag),
        };
        (wrapped, flag)
    }

    async fn read_frames(body: &mut DrainOnDrop, frames: usize) {
        for _ in 0..frames {
            std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await;
        }
    }

    /// Waits (a few seconds at most) until `taken` chunks were taken.
    async fn until_taken(taken: &AtomicUsize, count: usize) -> usize {
        for _ in 0..500 {
            if taken.load(Ordering::Relaxed) >= count {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        taken.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn a_body_dropped_part_read_is_read_to_its_end_behind_the_answer() {
        let (body, taken) = chunks(10);
        let (mut body, left_unread) = wrapped(body, false);
        read_frames(&mut body, 3).await;
        drop(body);
        assert!(left_unread.load(Ordering::Relaxed));
        assert_eq!(until_taken(&taken, 10).await, 10);
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_is_left_alone() {
        // Chunked: the body never says it is at its end; reading says so.
        let (body, taken) = chunks(4);
        let (mut body, left_unread) = wrapped(body, false);
        read_frames(&mut body, 5).await;
        assert!(body.is_end_stream());
        drop(body);
        assert!(!left_unread.load(Ordering::Relaxed));
        assert_eq!(taken.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_client_waiting_for_100_continue_is_not_asked_for_its_body() {
        let (body, taken) = chunks(10);
        let (body, left_unread) = wrapped(body, true);
        drop(body);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(taken.load(Ordering::Relaxed), 0);
        // Its connection still closes: the body may yet come.
        assert!(left_unread.load(Ordering::Relaxed));
        // Once read from, it was asked for its body, and is read to its end.
        let (body, taken) = chunks(10);
        let (mut body, left_unread) = wrapped(body, true);
        read_frames(&mut body, 1).await;
        drop(body);
        assert!(left_unread.load(Ordering::Relaxed));
        assert_eq!(until_taken(&taken, 10).await, 10);
    }
}
