// SPDX-License-Identifier: MPL-2.0
//! The service's routes: rembg's `/api/remove`, the page, health, metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Service;
use super::bridge::Refused;
use super::linger;
use super::options;
use super::page;
use crate::Format;
use crate::codec::{self, DecodeError};
use crate::element;

/// An answer other than an image: its status and what to tell the client.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "status": self.status.as_u16() });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

pub fn router(service: Arc<Service>) -> Router {
    let body_limit = service.body_limit;
    Router::new()
        .route("/", get(|| async { page::index() }))
        .route("/app.js", get(|| async { page::script() }))
        .route("/style.css", get(|| async { page::style() }))
        .route("/api/remove", get(remove_get).post(remove))
        .route("/api/openapi.json", get(|| async { page::openapi() }))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { Refusal::new(StatusCode::NOT_FOUND, "no such page") })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            linger::Lingering(service.body_timeout),
            linger::linger_layer,
        ))
        .with_state(service)
}

async fn health(State(s): State<Arc<Service>>) -> Response {
    let in_flight = s.max_queue - s.admitted.available_permits();
    let sending_bodies = 2 * s.max_queue - s.reading.available_permits();
    let (kept, in_use) = s.bridge.pipelines();
    axum::Json(serde_json::json!({
        "status": "ok",
        "model": s.model_name,
        "in_flight": in_flight,
        "sending_bodies": sending_bodies,
        "max_queue": s.max_queue,
        "pipelines": { "kept": kept, "in_use": in_use },
    }))
    .into_response()
}

async fn metrics(State(s): State<Arc<Service>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.text(),
    )
        .into_response()
}

fn query_pairs(request: &Request) -> Result<Vec<(String, String)>, Refusal> {
    Query::<Vec<(String, String)>>::try_from_uri(request.uri())
        .map(|q| q.0)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("the query string: {e}")))
}

/// rembg's GET takes `url=`, which is not fetched here (see `options`).
async fn remove_get(State(s): State<Arc<Service>>, request: Request) -> Response {
    let started = Instant::now();
    let answer = match query_pairs(&request)
        .and_then(|pairs| options::parse(&pairs, s.defaults, &s.model_name).map_err(bad))
    {
        Err(refusal) => refusal,
        Ok(_) => Refusal::new(
            StatusCode::BAD_REQUEST,
            "GET has no image: POST one (multipart field 'file', or the raw body)",
        ),
    }
    .into_response();
    s.metrics
        .answered(answer.status().as_u16(), started.elapsed());
    answer
}

async fn remove(State(s): State<Arc<Service>>, request: Request) -> Response {
    let started = Instant::now();
    let answer = match admit(&s, &request) {
        Err(refusal) => {
            // Answered before its body: dropped unread, the body is read
            // behind the answer and the connection then closed (linger's
            // layer), so a refused client's place is given back at once.
            drop(request);
            refusal.into_response()
        }
        Ok(admitted) => {
            // The whole request, from its arrival: reading, decoding, the
            // model, encoding. A request given up on keeps its frame's
            // place in the service until the frame is out of the pipeline
            // (see bridge).
            let deadline = tokio::time::Instant::from_std(started + s.request_timeout);
            let work = remove_background(&s, admitted, request, started);
            match tokio::time::timeout_at(deadline, work).await {
                Ok(Ok(image)) => image,
                Ok(Err(refusal)) => refusal.into_response(),
                Err(_) => busy(format!(
                    "the image was not done within {} s (--request-timeout)",
                    s.request_timeout.as_secs()
                ))
                .into_response(),
            }
        }
    };
    s.metrics
        .answered(answer.status().as_u16(), started.elapsed());
    answer
}

/// 503 with Retry-After: nothing wrong with the request, try it again.
fn busy(message: String) -> Refusal {
    Refusal {
        retry_after: Some(1),
        ..Refusal::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

fn full(s: &Service) -> Refusal {
    busy(format!(
        "the service is full: {} requests in flight (--max-queue); try again shortly",
        s.max_queue
    ))
}

fn bad(message: String) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, message)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A request let in to send its body: what it asks for, and its place
/// among the requests sending theirs.
struct Admitted {
    asked: options::Asked,
    reading: tokio::sync::OwnedSemaphorePermit,
}

/// What is refused before the body is read: bad options, a full service.
fn admit(s: &Arc<Service>, request: &Request) -> Result<Admitted, Refusal> {
    let asked = options::parse(&query_pairs(request)?, s.defaults, &s.model_name).map_err(bad)?;
    // A full service says so before the client sends its body.
    if s.admitted.available_permits() == 0 {
        return Err(full(s));
    }
    // The body is read before the request takes a place in the service,
    // under a bound of its own (twice --max-queue bodies at once): clients
    // slow to send theirs fill that, not the places of requests ready for
    // the model, and the bodies held at once stay bounded.
    let Ok(reading) = Arc::clone(&s.reading).try_acquire_owned() else {
        return Err(busy(format!(
            "the service is full: {} requests are sending their bodies (twice --max-queue); \
             try again shortly",
            2 * s.max_queue
        )));
    };
    Ok(Admitted { asked, reading })
}

async fn remove_background(
    s: &Arc<Service>,
    Admitted { asked, reading }: Admitted,
    request: Request,
    started: Instant,
) -> Result<Response, Refusal> {
    let body_deadline = tokio::time::Instant::from_std(started + s.body_timeout);
    let bytes = tokio::time::timeout_at(body_deadline, image_bytes(request))
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request's body did not arrive within {} s (--body-timeout)",
                    s.body_timeout.as_secs()
                ),
            )
        })??;
    drop(reading);
    if bytes.is_empty() {
        return Err(bad("the request has no image: its body is empty".into()));
    }
    let Ok(admitted) = Arc::clone(&s.admitted).try_acquire_owned() else {
        return Err(full(s));
    };
    let _queued = s.metrics.in_queue();

    let turn = Arc::clone(&s.codec_turns)
        .acquire_owned()
        .await
        .map_err(|_| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "the service is stopping"))?;
    let service = Arc::clone(s);
    let look = asked.look;
    let submitted = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let pic = codec::decode_bytes(&bytes, service.max_pixels).map_err(refusal_for)?;
        drop(turn);
        let decoded = t.elapsed();
        let output = service
            .bridge
            .submit(pic, look, admitted)
            .map_err(|e| match e {
                Refused::Busy(m) => busy(m),
                Refused::Failed(m) => {
                    Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the model: {m}"))
                }
            })?;
        Ok::<_, Refusal>((output, decoded))
    })
    .await
    .map_err(|e| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("decoding failed: {e}"),
        )
    })??;
    let (output, decoded) = submitted;

    let in_model = Instant::now();
    let sample = match output.await {
        Ok(Ok(sample)) => sample,
        Ok(Err(reason)) => {
            return Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the model failed: {reason}"),
            ));
        }
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the pipeline stopped before this image was done",
            ));
        }
    };
    let matted = in_model.elapsed();

    let turn = Arc::clone(&s.codec_turns)
        .acquire_owned()
        .await
        .map_err(|_| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "the service is stopping"))?;
    let format = asked.format;
    let (encoded, encode_time) = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let t = Instant::now();
        encode_sample(&sample, format).map(|bytes| (bytes, t.elapsed()))
    })
    .await
    .map_err(|e| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding failed: {e}"),
        )
    })?
    .map_err(|e| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding failed: {e}"),
        )
    })?;

    let content_type = match asked.format {
        Format::Png => "image/png",
        Format::Jpg => "image/jpeg",
        Format::Webp => "image/webp",
    };
    let timing = format!(
        "decode;dur={:.1}, matte;dur={:.1}, encode;dur={:.1}",
        ms(decoded),
        ms(matted),
        ms(encode_time)
    );
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::HeaderName::from_static("server-timing"), timing),
        ],
        Bytes::from(encoded),
    )
        .into_response())
}

fn refusal_for(e: DecodeError) -> Refusal {
    let status = match &e {
        DecodeError::Format => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        DecodeError::TooManyPixels { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        DecodeError::NoPixels { .. } | DecodeError::Corrupt(_) => StatusCode::BAD_REQUEST,
    };
    Refusal::new(status, e.to_string())
}

/// The image a request carries: rembg's multipart field `file`, or else
/// the whole body.
async fn image_bytes(request: Request) -> Result<Bytes, Refusal> {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/"));
    if !multipart {
        return Bytes::from_request(request, &()).await.map_err(|e| {
            Refusal::new(e.status(), format!("the request's body: {}", e.body_text()))
        });
    }
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| Refusal::new(e.status(), format!("the multipart form: {}", e.body_text())))?;
    loop {
        let field = form.next_field().await.map_err(|e| {
            Refusal::new(e.status(), format!("the multipart form: {}", e.body_text()))
        })?;
        let Some(field) = field else {
            return Err(bad(
                "the multipart form has no field 'file' (rembg's name for the image)".into(),
            ));
        };
        if field.name() == Some("file") {
            return field.bytes().await.map_err(|e| {
                Refusal::new(e.status(), format!("the multipart form: {}", e.body_text()))
            });
        }
    }
}

fn encode_sample(sample: &gst::Sample, format: Format) -> Result<Vec<u8>, String> {
    element::with_output(sample, |pic| {
        let mut out = Vec::new();
        codec::encode(pic, format, &mut out)?;
        Ok(out)
    })
}
