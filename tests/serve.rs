// SPDX-License-Identifier: MPL-2.0
//! `u2netmatte serve` on the real model: rembg's API gives what the folder
//! tool gives, bad requests get a 4xx naming their cause while the service
//! goes on, a full queue answers 503 at once, concurrent requests share
//! model runs, SIGTERM lets requests in flight finish.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::*;
use common::*;

/// The folder tool on `photos` with `options`: its outputs, by input name.
fn folder_tool(photos: &[&Path], options: &[&str], out: &Path) -> Vec<image::DynamicImage> {
    let status = Command::new(TOOL)
        .args(photos)
        .args(["-o", out.to_str().unwrap(), "--quiet"])
        .args(options)
        .status()
        .expect("the folder tool runs");
    assert!(
        status.success(),
        "the folder tool on {photos:?} {options:?}"
    );
    photos
        .iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap();
            let ext = options
                .iter()
                .position(|o| *o == "--format")
                .map_or("png", |i| options[i + 1]);
            image::open(out.join(format!("{stem}.{ext}"))).expect("the folder tool's output")
        })
        .collect()
}

fn decoded(r: &Response) -> image::DynamicImage {
    assert_eq!(r.status, 200, "{}", r.error());
    image::load_from_memory(&r.body).expect("an image comes back")
}

/// Largest difference of any channel of any pixel.
fn max_difference(a: &image::DynamicImage, b: &image::DynamicImage) -> u8 {
    assert_eq!((a.width(), a.height()), (b.width(), b.height()));
    assert_eq!(a.color(), b.color(), "same kind of image");
    a.as_bytes()
        .iter()
        .zip(b.as_bytes())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

#[test]
fn the_api_gives_what_the_folder_tool_gives() {
    let server = Server::start(&[]);
    let photos = [photo("chelsea.png"), photo("rocket.jpg")];
    let photo_paths: Vec<&Path> = photos.iter().map(|p| p.as_path()).collect();
    let cases: [(&str, &[&str]); 5] = [
        ("", &[]),
        ("?om=true", &["--mode", "mask"]),
        (
            "?mode=composite&threshold=0.3&feather=0.2&fill-color=0xff00ff00",
            &[
                "--mode",
                "composite",
                "--threshold",
                "0.3",
                "--feather",
                "0.2",
                "--fill-color",
                "0xff00ff00",
            ],
        ),
        (
            "?mode=blur&blur-radius=5&format=webp",
            &["--mode", "blur", "--blur-radius", "5", "--format", "webp"],
        ),
        (
            "?bgc=255,255,255,255",
            &[
                "--mode",
                "composite",
                "--feather",
                "1",
                "--fill-color",
                "0xffffffff",
            ],
        ),
    ];
    for (n, (query, options)) in cases.iter().enumerate() {
        let out = temp_dir(&format!("serve-equal-{n}"));
        let expected = folder_tool(&photo_paths, options, &out);
        for (photo, expected) in photos.iter().zip(&expected) {
            let bytes = std::fs::read(photo).unwrap();
            let got = decoded(&remove(server.addr, query, &bytes));
            // One batch or another: the model's arithmetic may differ by
            // a rounding.
            let d = max_difference(&got, expected);
            assert!(d <= 1, "{query} on {}: differs by {d}", photo.display());
            let raw = decoded(&remove_raw(server.addr, query, &bytes));
            assert!(max_difference(&raw, expected) <= 1, "raw body {query}");
        }
        std::fs::remove_dir_all(out).unwrap();
    }
    let r = remove(
        server.addr,
        "?format=jpg&mode=mask",
        &std::fs::read(&photos[0]).unwrap(),
    );
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(decoded(&r).color(), image::ColorType::L8);
    let timing = r.header("server-timing").expect("Server-Timing");
    assert!(
        timing.starts_with("decode;dur=") && timing.contains("matte;dur="),
        "{timing}"
    );
}

#[test]
fn rembgs_curl_calls_work_unchanged() {
    let server = Server::start(&[]);
    let out = temp_dir("serve-curl");
    let photo = photo("rocket.jpg");
    for (query, color) in [
        ("", image::ColorType::Rgba8),
        ("?om=true", image::ColorType::L8),
    ] {
        let file = out.join("out.png");
        let status = Command::new("curl")
            .args(["-s", "-S", "--fail", "-o", file.to_str().unwrap(), "-F"])
            .arg(format!("file=@{}", photo.display()))
            .arg(server.url(&format!("/api/remove{query}")))
            .status()
            .expect("curl runs");
        assert!(status.success(), "curl -F file=@... /api/remove{query}");
        let img = image::open(&file).unwrap();
        let original = image::open(&photo).unwrap();
        assert_eq!(
            (img.width(), img.height(), img.color()),
            (original.width(), original.height(), color)
        );
    }
    std::fs::remove_dir_all(out).unwrap();
}

/// A PNG whose header says `width` x `height`, with a tiny (wrong) body:
/// refusing it must not depend on decoding it.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
    png.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
    png.extend_from_slice(idat);
    png.extend_from_slice(&crc32(idat).to_be_bytes());
    png
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A BMP header claiming `width` x `height` at 24 bits, and no pixels.
fn bmp_header_only(width: i32, height: i32) -> Vec<u8> {
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&54u32.to_le_bytes());
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&54u32.to_le_bytes());
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&width.to_le_bytes());
    bmp.extend_from_slice(&height.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);
    bmp
}

#[test]
fn bad_requests_get_a_4xx_naming_the_cause_and_the_service_goes_on() {
    let server = Server::start(&["--max-body-mb", "2", "--body-timeout", "2"]);
    let a = server.addr;
    let png = std::fs::read(photo("chelsea.png")).unwrap();
    let jpeg = std::fs::read(photo("rocket.jpg")).unwrap();
    let expect = |what: &str, r: Response, status: u16, says: &str| {
        let error = r.error();
        assert_eq!(r.status, status, "{what}: {error}");
        assert!(
            error.contains(says),
            "{what}: '{error}' does not say '{says}'"
        );
    };
    expect("empty body", remove_raw(a, "", b""), 400, "body is empty");
    expect("empty file field", remove(a, "", b""), 400, "body is empty");
    expect(
        "not an image",
        remove(a, "", b"hello, this is text"),
        415,
        "not an image",
    );
    expect(
        "truncated PNG",
        remove(a, "", &png[..png.len() / 3]),
        400,
        "cannot be decoded",
    );
    expect(
        "truncated JPEG",
        remove(a, "", &jpeg[..jpeg.len() / 3]),
        400,
        "cannot be decoded",
    );
    expect(
        "decompression bomb",
        remove(a, "", &png_header_only(30000, 30000)),
        413,
        "30000x30000",
    );
    expect(
        "huge BMP",
        remove(a, "", &bmp_header_only(20_000, 20_000)),
        413,
        "20000x20000",
    );
    expect(
        "BMP beyond its decoder",
        remove(a, "", &bmp_header_only(100_000, 100_000)),
        400,
        "too large",
    );
    let zero = remove(a, "", &png_header_only(0, 16));
    assert_eq!(zero.status, 400, "a 0x16 image: {}", zero.error());
    let body = vec![0u8; 3_000_000];
    expect(
        "too big a body",
        remove_raw(a, "", &body),
        413,
        "length limit",
    );
    let no_boundary = exchange(
        a,
        "POST /api/remove HTTP/1.1\r\nContent-Type: multipart/form-data",
        b"--x\r\n\r\n",
    )
    .unwrap();
    expect(
        "multipart without a boundary",
        no_boundary,
        400,
        "multipart",
    );
    let (ct, form) = multipart_body("image", "x.png", &png);
    let wrong_field = exchange(
        a,
        &format!("POST /api/remove HTTP/1.1\r\nContent-Type: {ct}"),
        &form,
    );
    expect(
        "no 'file' field",
        wrong_field.unwrap(),
        400,
        "no field 'file'",
    );
    let (ct, mut form) = multipart_body("file", "x.png", &png);
    form.truncate(form.len() - 30);
    let cut = exchange(
        a,
        &format!("POST /api/remove HTTP/1.1\r\nContent-Type: {ct}"),
        &form,
    );
    expect("a form cut short", cut.unwrap(), 400, "multipart");
    expect(
        "unknown option",
        remove(a, "?colour=red", &png),
        400,
        "unknown option 'colour'",
    );
    expect(
        "bad mode",
        remove(a, "?mode=sepia", &png),
        400,
        "mode=sepia",
    );
    expect(
        "threshold out of range",
        remove(a, "?threshold=2", &png),
        400,
        "threshold",
    );
    expect(
        "bad colour",
        remove(a, "?bgc=300,0,0", &png),
        400,
        "'300' is not 0..255",
    );
    expect(
        "jpg cut-out",
        remove(a, "?format=jpg", &png),
        400,
        "no alpha channel",
    );
    expect(
        "alpha matting",
        remove(a, "?a=true", &png),
        400,
        "alpha matting",
    );
    expect(
        "another model",
        remove(a, "?model=u2net", &png),
        400,
        "this service runs u2netp",
    );
    expect(
        "GET with url",
        get(a, "/api/remove?url=http://10.0.0.1/x.png"),
        400,
        "does not fetch URLs",
    );
    expect("no such page", get(a, "/api/nothing"), 404, "no such page");

    // A client that sends its body slowly is cut off after --body-timeout.
    let started = Instant::now();
    let mut slow = post_head_only(a, png.len());
    use std::io::Write;
    // A part of the body, then nothing: within the 2 s, so that the
    // service has read all that was sent when it gives up (a write after
    // its answer would meet a closed socket).
    for chunk in png.chunks(1000).take(3) {
        slow.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    let r = read_response(&mut slow).unwrap();
    expect("slow body", r, 408, "--body-timeout");
    assert!(started.elapsed() < Duration::from_secs(10));

    // And it still serves.
    assert_eq!(decoded(&remove(a, "", &png)).width(), 451);
    assert_eq!(get(a, "/healthz").status, 200);
}

#[test]
fn an_answer_given_before_the_whole_body_still_reaches_a_client_sending_it() {
    // Answers axum gives before a handler reads the whole body: the body
    // limit's 413 part way through, a 404 and a 405 without reading it. A
    // client sending 30 MB (far past what the sockets buffer) before it
    // reads gets them, not a reset.
    let server = Server::start(&["--max-body-mb", "2", "--body-timeout", "20"]);
    let a = server.addr;
    let big = vec![7u8; 30_000_000];
    let post = |path: &str| {
        exchange(
            a,
            &format!("POST {path} HTTP/1.1\r\nContent-Type: application/octet-stream"),
            &big,
        )
        .unwrap_or_else(|e| panic!("POST {path} answered: {e}"))
    };
    let r = post("/api/remove");
    assert_eq!(r.status, 413, "{}", r.error());
    assert!(r.error().contains("length limit"), "{}", r.error());
    let r = post("/no/such/page");
    assert_eq!(r.status, 404, "{}", r.error());
    assert!(r.error().contains("no such page"), "{}", r.error());
    assert_eq!(post("/healthz").status, 405);
    let health = get(a, "/healthz");
    assert_eq!(health.status, 200);
}

/// A refusal made before the body is read (a bad option, a full service)
/// must still let a client that sends its whole body first, as most do,
/// read the answer: a socket closed on unread bytes is reset, and the reset
/// breaks the client's write or takes the answer with it. The body is far
/// larger than what the sockets buffer, so that none of it is luck.
#[test]
fn a_refusal_before_the_body_is_read_still_reaches_a_client_sending_it() {
    use std::io::Write;
    let server = Server::start(&["--max-queue", "1", "--body-timeout", "20"]);
    let a = server.addr;
    let big = vec![7u8; 24_000_000];
    let r = remove_raw(a, "?colour=red", &big);
    assert_eq!(r.status, 400, "{}", r.error());
    assert!(
        r.error().contains("unknown option 'colour'"),
        "{}",
        r.error()
    );

    // A client waiting for "100 Continue" gets the answer instead, at
    // once, and the connection closes without asking it for its body
    // (reading it would wait for the body until --body-timeout).
    let started = Instant::now();
    let mut waiting = std::net::TcpStream::connect(a).unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        waiting,
        "POST /api/remove?colour=red HTTP/1.1\r\nHost: {a}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\
         Expect: 100-continue\r\n\r\n",
        big.len()
    )
    .unwrap();
    let r = read_response(&mut waiting).unwrap();
    assert_eq!(r.status, 400, "{}", r.error());
    assert!(
        r.error().contains("unknown option 'colour'"),
        "{}",
        r.error()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the answer took {:?}",
        started.elapsed()
    );

    // Two requests that stall in their bodies hold every place for
    // bodies being read (twice --max-queue): the next one is refused
    // before its body.
    let png = std::fs::read(photo("chelsea.png")).unwrap();
    let stalled: Vec<_> = (0..2)
        .map(|_| {
            let mut s = post_head_only(a, png.len());
            s.write_all(&png[..100]).unwrap();
            s
        })
        .collect();
    wait_for_health(a, "2 bodies being sent", |h| h["sending_bodies"] == 2);
    let r = remove_raw(a, "", &big);
    assert_eq!(r.status, 503, "{}", r.error());
    assert!(r.error().contains("sending their bodies"), "{}", r.error());
    assert_eq!(r.header("connection"), Some("close"));
    drop(stalled);
    wait_for_health(a, "no body being sent", |h| h["sending_bodies"] == 0);

    // What it read of the refused bodies was dropped, and it still serves.
    assert_eq!(decoded(&remove(a, "", &png)).width(), 451);
    assert_eq!(get(a, "/healthz").status, 200);
}

#[test]
fn a_full_queue_answers_503_at_once_and_never_hangs() {
    let server = Server::start(&["--max-queue", "2"]);
    let a = server.addr;
    let png = std::fs::read(photo("astronaut.png")).unwrap();
    let started = Instant::now();
    let answers: Vec<Response> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..10).map(|_| s.spawn(|| remove(a, "", &png))).collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let full: Vec<&Response> = answers.iter().filter(|r| r.status == 503).collect();
    assert_eq!(ok + full.len(), 10, "only 200 and 503: {answers:?}");
    assert!(ok >= 2, "the two admitted were answered: {ok}");
    assert!(
        !full.is_empty(),
        "ten at once into a queue of two: some refused"
    );
    for r in &full {
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(r.error().contains("--max-queue"), "{}", r.error());
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    let metrics = get(a, "/metrics").text();
    assert!(
        metrics.contains(&format!(
            "u2netmatte_requests_total{{status=\"503\"}} {}",
            full.len()
        )),
        "{metrics}"
    );
}

#[test]
fn slow_clients_hold_only_their_own_connections() {
    use std::io::{Read, Write};
    // --body-timeout long enough that the first stalled body still holds
    // its place after a whole request on a busy machine (3 s was not, in a
    // CI run under load: the third request got its place and a 200).
    let server = Server::start(&["--max-queue", "1", "--body-timeout", "8"]);
    let a = server.addr;
    let png = std::fs::read(photo("chelsea.png")).unwrap();
    let started = Instant::now();
    // One client stops halfway through its headers, another halfway
    // through its body.
    let mut headers_half = std::net::TcpStream::connect(a).unwrap();
    headers_half
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    headers_half
        .write_all(b"POST /api/remove HTTP/1.1\r\nHost: x\r\nContent-Ty")
        .unwrap();
    let mut body_half = post_head_only(a, png.len());
    body_half.write_all(&png[..png.len() / 2]).unwrap();
    wait_for_health(a, "a body being sent", |h| h["sending_bodies"] == 1);

    // The one place in the service is not theirs: a whole request gets it.
    let r = remove(a, "", &png);
    assert_eq!(r.status, 200, "{}", r.error());
    assert_eq!(decoded(&r).width(), 451);

    // Bodies read at once are bounded too (twice --max-queue): with a
    // second one stalled, the next request is refused at once.
    let mut body_half_too = post_head_only(a, png.len());
    body_half_too.write_all(&png[..100]).unwrap();
    wait_for_health(a, "2 bodies being sent", |h| h["sending_bodies"] == 2);
    let r = remove(a, "", &png);
    assert_eq!(r.status, 503, "{}", r.error());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        r.error().contains("2 requests are sending their bodies"),
        "{}",
        r.error()
    );

    // They are cut off after --body-timeout: a body with a 408, the
    // headers by closing the connection (there is no request to answer).
    let r = read_response(&mut body_half).unwrap();
    assert_eq!(r.status, 408, "{}", r.error());
    assert!(r.error().contains("--body-timeout"), "{}", r.error());
    assert_eq!(read_response(&mut body_half_too).unwrap().status, 408);
    let mut rest = Vec::new();
    match headers_half.read_to_end(&mut rest) {
        Ok(_) => assert!(
            !String::from_utf8_lossy(&rest).contains(" 200 "),
            "{rest:?}"
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "the header-less connection was still open after {took:?}"
    );
    assert_eq!(get(a, "/healthz").status, 200);
}

#[test]
fn a_new_look_waits_while_every_kept_pipeline_is_busy() {
    // Sixteen requests with sixteen thresholds hold sixteen pipelines: their
    // frames wait for a batch of 17, which only the 17th frame fills.
    let server = Server::start(&["--batch-size", "17", "--batch-timeout", "50000"]);
    let a = server.addr;
    let png = std::fs::read(photo("chelsea.png")).unwrap();
    std::thread::scope(|s| {
        let held: Vec<_> = (0..16)
            .map(|i| {
                let png = &png;
                s.spawn(move || remove(a, &format!("?threshold=0.{:02}", i + 10), png))
            })
            .collect();
        wait_for_health(a, "16 pipelines in use", |h| h["pipelines"]["in_use"] == 16);
        let r = remove(a, "?threshold=0.90", &png);
        assert_eq!(r.status, 503, "{}", r.error());
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(r.error().contains("16 different looks"), "{}", r.error());
        // A look already kept is still served: its frame is the 17th, and
        // the batch runs.
        let r = remove(a, "?threshold=0.10", &png);
        assert_eq!(r.status, 200, "{}", r.error());
        for h in held {
            let r = h.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.error());
        }
    });
    // Once they are idle, the new look takes the place of one of them.
    let r = remove(a, "?threshold=0.90", &png);
    assert_eq!(r.status, 200, "{}", r.error());
}

/// The picture of request `i` in the load test: one of a few sizes.
fn load_picture(i: usize) -> (u32, u32) {
    [(64, 48), (320, 240), (451, 300), (800, 600), (130, 400)][i % 5]
}

#[test]
fn many_clients_at_once_get_their_own_images_in_shared_model_runs() {
    let server = Server::start(&["--batch-size", "8"]);
    let a = server.addr;
    let source = image::open(photo("coffee.png")).unwrap();
    let pictures: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            let (w, h) = load_picture(i);
            let mut png = Vec::new();
            source
                .resize_exact(w, h, image::imageops::FilterType::Triangle)
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            png
        })
        .collect();
    // Each picture's answer alone, to check every answer under load.
    let expected: Vec<image::DynamicImage> = pictures
        .iter()
        .map(|p| decoded(&remove(a, "", p)))
        .collect();

    let run = |from: usize, to: usize| {
        let next = std::sync::atomic::AtomicUsize::new(from);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if i >= to {
                            break;
                        }
                        let got = decoded(&remove(a, "", &pictures[i % 5]));
                        let d = max_difference(&got, &expected[i % 5]);
                        assert!(d <= 1, "request {i} got another picture's answer ({d})");
                    }
                });
            }
        });
    };
    run(0, 20);
    let rss_early = server.rss_kib();
    run(20, 200);
    let rss_late = server.rss_kib();
    assert!(
        rss_late as f64 <= rss_early as f64 * 1.10,
        "memory grew under load: {rss_early} KiB after 20 requests, {rss_late} KiB after 200"
    );
    let metrics = get(a, "/metrics").text();
    assert!(
        metrics.contains("u2netmatte_requests_total{status=\"200\"} 205"),
        "{metrics}"
    );
    let count = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let runs = count("u2netmatte_batch_frames_count");
    let single = count("u2netmatte_batch_frames_bucket{le=\"1.0\"}");
    let frames = count("u2netmatte_batch_frames_sum");
    assert_eq!(frames, 205.0, "every frame in one counted run");
    assert!(
        runs - single >= 10.0 && runs < 150.0,
        "16 clients at once share model runs: {runs} runs, {single} of one frame"
    );
}

/// Waits (at most 30 s) until /healthz says what `done` looks for.
fn wait_for_health(
    addr: std::net::SocketAddr,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) {
    let started = Instant::now();
    loop {
        let health: serde_json::Value =
            serde_json::from_slice(&get(addr, "/healthz").body).unwrap();
        if done(&health) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never {what}: {health}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most 30 s) until /healthz counts `count` requests in flight.
fn wait_for_in_flight(addr: std::net::SocketAddr, count: u64) {
    wait_for_health(addr, &format!("{count} in flight"), |h| {
        h["in_flight"].as_u64() == Some(count)
    });
}

#[test]
fn a_request_given_up_on_keeps_its_place_until_its_frame_is_out() {
    // A lone frame waits 3 s for its batch to fill: the request's 1 s
    // runs out first.
    let server = Server::start(&[
        "--max-queue",
        "1",
        "--request-timeout",
        "1",
        "--batch-size",
        "4",
        "--batch-timeout",
        "3000",
    ]);
    let a = server.addr;
    let png = std::fs::read(photo("chelsea.png")).unwrap();
    let started = Instant::now();
    let r = remove(a, "", &png);
    assert_eq!(r.status, 503, "{}", r.error());
    assert!(
        r.error()
            .contains("not done within 1 s (--request-timeout)"),
        "{}",
        r.error()
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // Its frame is still in the element: the service is still full.
    let r = remove(a, "", &png);
    assert_eq!(r.status, 503, "{}", r.error());
    assert!(r.error().contains("--max-queue"), "{}", r.error());
    // Once the frame is out, the place is free again.
    wait_for_in_flight(a, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let health: serde_json::Value = serde_json::from_slice(&get(a, "/healthz").body).unwrap();
    assert_eq!(health["in_flight"], 0);
}

#[test]
fn sigterm_lets_the_requests_in_flight_finish() {
    let mut server = Server::start(&[]);
    let a = server.addr;
    let png = std::fs::read(photo("astronaut.png")).unwrap();
    let answers = std::thread::scope(|s| {
        let clients: Vec<_> = (0..3).map(|_| s.spawn(|| remove(a, "", &png))).collect();
        // All three in flight (read, decoding or in the model) first.
        wait_for_in_flight(a, 3);
        let code = server.terminate(Duration::from_secs(60));
        let answers: Vec<u16> = clients
            .into_iter()
            .map(|c| c.join().unwrap().status)
            .collect();
        (code, answers)
    });
    assert_eq!(answers, (Some(0), vec![200, 200, 200]));
    assert!(
        server
            .log
            .lock()
            .unwrap()
            .contains("finishing the requests in flight")
    );
    assert!(
        std::net::TcpStream::connect(a).is_err(),
        "no longer listening"
    );
}

/// A flat picture at `level`; with one white pixel when `spot`: the model
/// sees a frame divided by its own maximum, so only then is it dark.
fn plain_png(level: u8, spot: bool) -> Vec<u8> {
    let mut img = image::RgbImage::from_pixel(64, 48, image::Rgb([level; 3]));
    if spot {
        img.put_pixel(0, 0, image::Rgb([255; 3]));
    }
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

#[test]
fn a_model_that_fails_at_run_time_fails_those_requests_and_the_service_goes_on() {
    let dir = temp_dir("serve-run-fails");
    let model = dir.join("bright-fails.onnx");
    write_bright_fails_model(&model);
    let server = Server::start(&["--model", model.to_str().unwrap(), "--provider", "cpu"]);
    let (dark, bright) = (plain_png(10, true), plain_png(250, false));
    for round in 0..2 {
        let r = remove(server.addr, "", &bright);
        assert_eq!(r.status, 500, "round {round}: {}", r.error());
        assert!(r.error().contains("inference failed"), "{}", r.error());
        // The next request gets a pipeline of its own again.
        let r = remove(server.addr, "", &dark);
        assert_eq!(decoded(&r).width(), 64, "round {round}");
    }
    assert_eq!(get(server.addr, "/healthz").status, 200);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_model_that_cannot_load_ends_the_service_before_it_listens() {
    let out = Command::new(TOOL)
        .args(["serve", "--port", "0", "--model", "/nonexistent/model.onnx"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/model.onnx") && !stderr.contains("listening"),
        "{stderr}"
    );
}

#[test]
fn the_service_describes_itself() {
    let server = Server::start(&[]);
    let a = server.addr;
    let health: serde_json::Value = serde_json::from_slice(&get(a, "/healthz").body).unwrap();
    assert_eq!(
        (health["status"].as_str(), health["model"].as_str()),
        (Some("ok"), Some("u2netp"))
    );
    // The default look's pipeline, built at the start, idle.
    assert_eq!(
        health["pipelines"],
        serde_json::json!({"kept": 1, "in_use": 0})
    );
    let api: serde_json::Value = serde_json::from_slice(&get(a, "/api/openapi.json").body).unwrap();
    assert_eq!(api["openapi"], "3.1.0");
    let page = get(a, "/");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().contains("/app.js"));
    let metrics = get(a, "/metrics");
    assert!(
        metrics
            .text()
            .contains("# TYPE u2netmatte_queue_depth gauge")
    );
    assert!(metrics.text().ends_with("# EOF\n"));
}
