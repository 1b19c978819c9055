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

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use hyper::body::Body as _;

/// Reads `request`'s body to its end in a task of its own and drops what
/// it reads; gives up at `deadline` or past `limit` bytes, closing the
/// connection then. The task holds only the body, never the bytes.
pub fn drain_in_background(request: Request, deadline: tokio::time::Instant, limit: usize) {
    // A client waiting for "100 Continue" sends no body when the answer
    // comes first; reading would ask it for one.
    let awaits_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if awaits_continue {
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
