// SPDX-License-Identifier: MPL-2.0
//! `make bench-shared`: four 640x480 streams through four elements, each
//! with a session of its own or all sharing one (`shared-session`), beside
//! one element alone: throughput of the streams together and the process's
//! peak RSS. Each configuration runs in a process of its own, so that its
//! peak RSS is its alone. Prints a markdown table. Not a test: the figures
//! depend on the machine.
//!
//! Environment: SHARED_FRAMES (frames per stream, default 16), SHARED_RUNS
//! (runs per configuration, the median is shown; default 3), SHARED_PROPS
//! (extra element properties, e.g. `provider=cuda batch-size=1`),
//! BENCH_TOP (the project folder, default where it was built).

mod common;

use std::time::{Duration, Instant};

use gst::prelude::*;

const CHILD_ENV: &str = "U2NETMATTE_SHARED_BENCH_CHILD";

/// `streams` branches of 640x480 frames into elements with `session` (empty:
/// each its own) to EOS; the seconds it took from PLAYING.
fn run(streams: usize, session: &str, frames: u64, props: &str) -> f64 {
    let patterns = ["ball", "smpte", "pinwheel", "circular"];
    let model = format!("{}/models/u2netp.onnx", common::top());
    let desc: Vec<String> = (0..streams)
        .map(|n| {
            format!(
                "videotestsrc num-buffers={frames} pattern={} ! \
                 video/x-raw,format=RGB,width=640,height=480,framerate=30/1 ! \
                 u2netmatte model={model} shared-session={session:?} {props} ! fakesink",
                patterns[n % patterns.len()]
            )
        })
        .collect();
    let pipeline = common::pipeline(&desc.join("  "));
    // Loading and warm-up (NULL->READY, then on the engine's thread) are
    // not what is timed; prerolling is, since in PAUSED the elements
    // already take and run frames.
    pipeline.set_state(gst::State::Ready).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let bus = pipeline.bus().unwrap();
    let start = Instant::now();
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(1800),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the streams end");
    let seconds = start.elapsed().as_secs_f64();
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{} ({:?})", e.error(), e.debug());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    seconds
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// In a child: runs one configuration `runs` times; prints the times and
/// the peak RSS.
fn child(config: &str) {
    let (streams, session) = config.split_once(':').unwrap();
    let streams: usize = streams.parse().unwrap();
    let frames = common::env_u64("SHARED_FRAMES", 16);
    let props = std::env::var("SHARED_PROPS").unwrap_or_default();
    let runs = common::env_u64("SHARED_RUNS", 3);
    let times: Vec<String> = (0..runs)
        .map(|_| run(streams, session, frames, &props).to_string())
        .collect();
    println!("seconds={}", times.join(","));
    println!("peak-rss-mib={}", peak_rss_mib());
}

struct Figures {
    fps: f64,
    rss_mib: f64,
}

fn measure(streams: usize, session: &str) -> Figures {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--bench")
        .env(CHILD_ENV, format!("{streams}:{session}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{streams} streams, session {session:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {stdout}"))
            .to_string()
    };
    let mut times: Vec<f64> = value("seconds=")
        .split(',')
        .map(|t| t.parse().unwrap())
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let frames = common::env_u64("SHARED_FRAMES", 16) as f64 * streams as f64;
    Figures {
        fps: frames / median,
        rss_mib: value("peak-rss-mib=").parse().unwrap(),
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary too, and must not spend minutes timing things.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    gst::init().unwrap();
    gstu2netmatte::plugin_register_static().unwrap();
    if let Ok(config) = std::env::var(CHILD_ENV) {
        child(&config);
        return;
    }
    let frames = common::env_u64("SHARED_FRAMES", 16);
    let props = std::env::var("SHARED_PROPS").unwrap_or_default();
    println!(
        "## Streams of 640x480 RGB, {frames} frames each, U2NetP, element properties: {}\n",
        if props.is_empty() { "defaults" } else { &props }
    );
    println!("| | frames/s, all streams (median) | vs one stream | peak RSS MiB | vs one stream |");
    println!("|---|---|---|---|---|");
    let one = measure(1, "");
    for (label, figures) in [
        ("one element", None),
        ("four elements, a session each", Some(measure(4, ""))),
        ("four elements, shared-session", Some(measure(4, "bench"))),
    ] {
        let f = figures.as_ref().unwrap_or(&one);
        println!(
            "| {label} | {:.2} | {:.2} | {:.0} | {:.2} |",
            f.fps,
            f.fps / one.fps,
            f.rss_mib,
            f.rss_mib / one.rss_mib
        );
    }
}
