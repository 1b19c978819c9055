// SPDX-License-Identifier: MPL-2.0
//! A soak: 2,000 frames through the element; memory must stop growing once
//! warm. On a tiny stand-in model (the channel mean, 64x64) so that it runs in
//! seconds: the element's own buffers, queues, pools and the ONNX Runtime
//! calls are the same as with U2NetP, only the graph is smaller.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use gst::prelude::*;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Runs `frames` frames through the element with `model`; returns (frames
/// out, RSS in KiB every `every` frames).
fn soak(model: &str, frames: usize, every: usize) -> Vec<(usize, u64)> {
    // RSS is the whole process's: one soak at a time.
    static SERIAL: Mutex<()> = Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pipeline = parse_pipeline(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width=160,height=120,format=BGRx ! \
         u2netmatte name=m model={model} batch-size=4 mode=composite ! fakesink name=sink"
    ));
    let count = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let (c, s) = (count.clone(), samples.clone());
    pipeline
        .by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            if n % every == 0 {
                s.lock().unwrap().push((n, rss_kib()));
            }
            gst::PadProbeReturn::Ok
        });
    run_pipeline(&pipeline, Duration::from_secs(600)).unwrap();
    assert_eq!(count.load(Ordering::SeqCst), frames);
    let samples = samples.lock().unwrap().clone();
    println!("{model}: frames -> RSS (KiB): {samples:?}");
    samples
}

#[track_caller]
fn growth_percent(samples: &[(usize, u64)], warm: usize, end: usize) -> f64 {
    let at = |n| samples.iter().find(|(k, _)| *k == n).unwrap().1;
    let (w, e) = (at(warm), at(end));
    let growth = (e as f64 - w as f64) / w as f64 * 100.0;
    println!("RSS after frame {warm}: {w} KiB, after frame {end}: {e} KiB ({growth:+.2}%)");
    growth
}

#[test]
fn two_thousand_frames_in_bounded_memory() {
    let dir = temp_dir("soak");
    let model = dir.join("tiny.onnx");
    write_tiny_model(&model, &[1, 3, 64, 64], false);
    let samples = soak(model.to_str().unwrap(), 2000, 250);
    let growth = growth_percent(&samples, 500, 2000);
    assert!(growth < 5.0, "RSS grew {growth:.2}% from frame 500 to 2000");
}

#[test]
fn u2netp_runs_in_bounded_memory() {
    // U2NetP itself, fewer frames (each takes 0.1-0.5 s on 2 cores).
    let samples = soak("u2netp", 120, 20);
    let growth = growth_percent(&samples, 40, 120);
    assert!(growth < 5.0, "RSS grew {growth:.2}% from frame 40 to 120");
}
