// SPDX-License-Identifier: MPL-2.0
//! `make bench-live`: the element on a live 640x480 source at 30 fps, as a
//! webcam user runs it (default properties), and the temporal stability of
//! its masks on a real clip. Prints markdown tables. Not a test: the
//! figures depend on the machine.
//!
//! Environment: LIVE_SECONDS (default 20; 0 skips the live runs),
//! LIVE_PROPS (extra element properties for the live runs), FLICKER_FRAMES
//! (frames of each clip, default 150; 0 skips the stability table),
//! FLICKER_CLIPS (clips in .deps/clips, default vtest.avi,Megamind.avi),
//! FLICKER_STRENGTHS (the temporal-smoothing weights, default
//! 0.5,0.8,0.9,0.93,0.94),
//! BENCH_TOP (the project folder, default where it was built).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_video::prelude::*;

#[derive(Debug, Default)]
struct LiveFigures {
    fps: f64,
    own_latency_ms: f64,
    pipeline_latency_ms: f64,
    /// The most a frame reached the sink after its running time.
    max_late_ms: f64,
    /// The same, less the pipeline's latency: above one frame, the sink
    /// would have shown it late.
    max_over_latency_ms: f64,
    mean_mask_age_ms: f64,
    frames: usize,
}

/// Runs `videotestsrc is-live=true` at 640x480@30 through the element with
/// `props` into a clock-synced fakesink for `seconds`.
fn live_run(props: &str, seconds: u64) -> LiveFigures {
    let pipeline = common::pipeline(&format!(
        "videotestsrc is-live=true pattern=ball ! \
         video/x-raw,format=RGBA,width=640,height=480,framerate=30/1 ! \
         u2netmatte name=m stats=true {props} ! fakesink name=sink sync=true"
    ));
    let sink = pipeline.by_name("sink").unwrap();
    let arrivals: Arc<Mutex<Vec<(Instant, gst::ClockTime, gst::ClockTime)>>> = Default::default();
    {
        let arrivals = arrivals.clone();
        let element = sink.clone();
        sink.static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                let (Some(buffer), Some(clock)) = (info.buffer(), element.clock()) else {
                    return gst::PadProbeReturn::Ok;
                };
                let Some(event) = pad.sticky_event::<gst::event::Segment>(0) else {
                    return gst::PadProbeReturn::Ok;
                };
                let segment = event.segment().downcast_ref::<gst::ClockTime>().cloned();
                let running = segment.and_then(|s| s.to_running_time(buffer.pts()));
                let now = clock.time();
                let (Some(running), Some(base)) = (running, element.base_time()) else {
                    return gst::PadProbeReturn::Ok;
                };
                arrivals
                    .lock()
                    .unwrap()
                    .push((Instant::now(), running, now.saturating_sub(base)));
                gst::PadProbeReturn::Ok
            });
    }
    let bus = pipeline.bus().unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let end = Instant::now() + Duration::from_secs(seconds);
    let (mut age_sum, mut age_frames) = (0.0, 0u64);
    while Instant::now() < end {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Error(e) => panic!("{props}: {} ({:?})", e.error(), e.debug()),
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure()
                    && s.name() == "u2netmatte-stats"
                {
                    let frames = s.get::<u32>("frames-out").unwrap_or(0);
                    age_sum += s.get::<f64>("mask-age-ms").unwrap_or(0.0) * f64::from(frames);
                    age_frames += u64::from(frames);
                }
            }
            gst::MessageView::Latency(_) => {
                let _ = pipeline.recalculate_latency();
            }
            _ => {}
        }
    }
    let m = pipeline.by_name("m").unwrap();
    let mut ours = gst::query::Latency::new();
    let mut upstream = gst::query::Latency::new();
    m.static_pad("src").unwrap().query(&mut ours);
    m.static_pad("sink").unwrap().peer_query(&mut upstream);
    let mut total = gst::query::Latency::new();
    pipeline.query(&mut total);
    pipeline.set_state(gst::State::Null).unwrap();

    let ms = |t: gst::ClockTime| t.nseconds() as f64 / 1e6;
    let pipeline_latency = total.result().1;
    let arrivals = arrivals.lock().unwrap();
    // The first two seconds are start-up (preroll, warm-up): not counted.
    let start = arrivals.first().map(|a| a.0 + Duration::from_secs(2));
    let steady: Vec<_> = arrivals
        .iter()
        .filter(|a| start.is_some_and(|s| a.0 >= s))
        .collect();
    let fps = match (steady.first(), steady.last()) {
        (Some(first), Some(last)) if steady.len() > 1 => {
            (steady.len() - 1) as f64 / last.0.duration_since(first.0).as_secs_f64()
        }
        _ => 0.0,
    };
    let max_late = steady
        .iter()
        .map(|(_, running, now)| ms(*now) - ms(*running))
        .fold(f64::NEG_INFINITY, f64::max);
    LiveFigures {
        fps,
        own_latency_ms: ms(ours.result().1.saturating_sub(upstream.result().1)),
        pipeline_latency_ms: ms(pipeline_latency),
        max_late_ms: max_late,
        max_over_latency_ms: max_late - ms(pipeline_latency),
        mean_mask_age_ms: if age_frames > 0 {
            age_sum / age_frames as f64
        } else {
            f64::NAN
        },
        frames: steady.len(),
    }
}

type Frames = Vec<(u64, Vec<u8>)>;

/// Decoded RGB frames and masks of the first `frames` of a clip at
/// `smoothing`, each with its PTS: (width, height, rgb frames, masks).
fn clip_masks(
    clip: &str,
    frames: u64,
    smoothing: f64,
    motion: bool,
) -> (usize, usize, Frames, Frames) {
    let pipeline = common::pipeline(&format!(
        "filesrc location={clip} ! decodebin ! identity eos-after={frames} ! videoconvert ! \
         video/x-raw,format=RGB ! tee name=t \
         t. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! appsink name=rgb sync=false \
         t. ! queue ! u2netmatte mode=mask temporal-smoothing={smoothing} motion-compensation={motion} ! \
         appsink name=mask sync=false"
    ));
    let sink = |name: &str| common::app_sink(&pipeline, name);
    let (rgb_sink, mask_sink) = (sink("rgb"), sink("mask"));
    pipeline.set_state(gst::State::Playing).unwrap();
    let pull_all = |s: gst_app::AppSink| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut size = (0, 0);
            while let Ok(sample) = s.pull_sample() {
                let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
                let frame = gst_video::VideoFrame::from_buffer_readable(
                    sample.buffer_owned().unwrap(),
                    &info,
                )
                .unwrap();
                let (w, h) = (info.width() as usize, info.height() as usize);
                let bpp = info.format_info().pixel_stride()[0] as usize;
                let stride = frame.plane_stride()[0] as usize;
                let data = frame.plane_data(0).unwrap();
                let mut packed = Vec::with_capacity(w * h * bpp);
                for row in data.chunks(stride).take(h) {
                    packed.extend_from_slice(&row[..w * bpp]);
                }
                out.push((sample.buffer().unwrap().pts().unwrap().nseconds(), packed));
                size = (w, h);
            }
            (size, out)
        })
    };
    let (rgb, masks) = (pull_all(rgb_sink), pull_all(mask_sink));
    let ((w, h), rgb) = rgb.join().unwrap();
    let (_, masks) = masks.join().unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    (w, h, rgb, masks)
}

/// Mean |alpha_t - alpha_t-1| over the pixels whose 3x3-blurred RGB
/// changed by less than 3 levels in every channel (alpha in 0..1).
fn flicker(w: usize, h: usize, rgb: &[Vec<u8>], masks: &[Vec<u8>]) -> f64 {
    let blurred: Vec<Vec<u8>> = rgb
        .iter()
        .map(|f| {
            let mut out = Vec::new();
            gstu2netmatte::temporal::box_blur_3x3(f, w as u32, h as u32, &mut out);
            out
        })
        .collect();
    let (mut sum, mut count) = (0.0, 0u64);
    for t in 1..masks.len() {
        for p in 0..w * h {
            let still =
                (0..3).all(|c| blurred[t][3 * p + c].abs_diff(blurred[t - 1][3 * p + c]) < 3);
            if still {
                sum += f64::from(masks[t][p].abs_diff(masks[t - 1][p])) / 255.0;
                count += 1;
            }
        }
    }
    if count == 0 { 0.0 } else { sum / count as f64 }
}

/// Mean |alpha_t - per-frame alpha_t| over all pixels.
fn drift(masks: &[Vec<u8>], per_frame: &[Vec<u8>]) -> f64 {
    let (mut sum, mut count) = (0.0, 0u64);
    for (a, b) in masks.iter().zip(per_frame) {
        for (x, y) in a.iter().zip(b) {
            sum += f64::from(x.abs_diff(*y)) / 255.0;
            count += 1;
        }
    }
    sum / count.max(1) as f64
}

/// The soft mask of one photo at `size` (0: the model's own).
fn photo_mask(photo: &str, size: u32) -> Vec<u8> {
    let pipeline = common::pipeline(&format!(
        "filesrc location={photo} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! \
         u2netmatte mode=mask inference-size={size} ! appsink name=sink sync=false"
    ));
    let sink = common::app_sink(&pipeline, "sink");
    pipeline.set_state(gst::State::Playing).unwrap();
    let sample = sink.pull_sample().unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let frame =
        gst_video::VideoFrame::from_buffer_readable(sample.buffer_owned().unwrap(), &info).unwrap();
    let (w, h, stride) = (
        info.width() as usize,
        info.height() as usize,
        frame.plane_stride()[0] as usize,
    );
    let data = frame.plane_data(0).unwrap();
    data.chunks(stride)
        .take(h)
        .flat_map(|r| r[..w].to_vec())
        .collect()
}

/// Milliseconds one frame of U2NetP takes at `size` x `size` on the CPU
/// (median of 5 warm runs).
fn model_ms(size: u32) -> f64 {
    use gstu2netmatte::model::{Model, ModelOptions, Provider};
    let runtime = gstu2netmatte::runtime::load(None, None, ort::logging::LogLevel::Warning)
        .unwrap()
        .runtime;
    let path = format!("{}/models/u2netp.onnx", common::top());
    let mut model = Model::load(
        &runtime,
        std::path::Path::new(&path),
        &ModelOptions {
            provider: Provider::Cpu,
            input_size: Some(size),
            ..Default::default()
        },
    )
    .unwrap();
    let input = vec![0.1f32; model.frame_len()];
    let mut masks = Vec::new();
    model.run(&input, 1, &mut masks).unwrap();
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            model.run(&input, 1, &mut masks).unwrap();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[2]
}

fn inference_sizes() {
    let photos: Vec<String> = [
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "motorcycle_left.png",
        "rocket.jpg",
    ]
    .iter()
    .map(|p| format!("{}/.deps/photos/{p}", common::top()))
    .collect();
    let reference: Vec<Vec<u8>> = photos.iter().map(|p| photo_mask(p, 0)).collect();
    println!(
        "\n## inference-size: U2NetP on the CPU, masks against the 320x320 ones on 5 photos (IoU at 0.5)\n"
    );
    println!("| inference-size | ms a frame | vs 320 | mean IoU | worst IoU |");
    println!("|---|---|---|---|---|");
    let base = model_ms(320);
    for size in [320u32, 256, 224, 192] {
        let ms = if size == 320 { base } else { model_ms(size) };
        let ious: Vec<f64> = photos
            .iter()
            .zip(&reference)
            .map(|(p, r)| {
                let m = photo_mask(p, size);
                let (mut inter, mut union) = (0u64, 0u64);
                for (a, b) in m.iter().zip(r) {
                    let (a, b) = (*a > 127, *b > 127);
                    inter += u64::from(a && b);
                    union += u64::from(a || b);
                }
                if union == 0 {
                    1.0
                } else {
                    inter as f64 / union as f64
                }
            })
            .collect();
        let mean = ious.iter().sum::<f64>() / ious.len() as f64;
        let worst = ious.iter().copied().fold(1.0, f64::min);
        println!(
            "| {size} | {ms:.0} | {:.2} | {mean:.3} | {worst:.3} |",
            ms / base
        );
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
    let seconds = common::env_u64("LIVE_SECONDS", 20);
    let extra = std::env::var("LIVE_PROPS").unwrap_or_default();

    if seconds > 0 {
        live_table(seconds, &extra);
    }

    let frames = common::env_u64("FLICKER_FRAMES", 150);
    if frames > 0 {
        let strengths = common::env_numbers("FLICKER_STRENGTHS", "0.5,0.8,0.9,0.93,0.94");
        for clip in common::env_list("FLICKER_CLIPS", "vtest.avi,Megamind.avi") {
            temporal_stability(&clip, frames, &strengths);
        }
    }
    inference_sizes();
}

/// Flicker and drift of `temporal-smoothing` at a few weights, with and
/// without `motion-compensation`, on the first `frames` of a clip.
fn temporal_stability(name: &str, frames: u64, strengths: &[f64]) {
    let clip = format!("{}/.deps/clips/{name}", common::top());
    println!("\n## Temporal stability: first {frames} frames of {name}, mode=mask\n");
    println!(
        "flicker: mean |alpha_t - alpha_t-1| where the 3x3-blurred picture changed < 3 levels; drift: mean |alpha - per-frame alpha|\n"
    );
    println!("| temporal-smoothing | motion-compensation | flicker | vs per-frame | drift |");
    println!("|---|---|---|---|---|");
    let (w, h, rgb, per_frame) = clip_masks(&clip, frames, 0.0, false);
    let settings: Vec<(f64, bool)> = strengths
        .iter()
        .copied()
        .flat_map(|s| [(s, false), (s, true)])
        .collect();
    let runs: Vec<Frames> = settings
        .iter()
        .map(|&(s, motion)| clip_masks(&clip, frames, s, motion).3)
        .collect();
    // The frames every run has (an appsink may get EOS a frame early).
    let common: Vec<u64> = rgb
        .iter()
        .map(|(pts, _)| *pts)
        .filter(|pts| {
            std::iter::once(&per_frame)
                .chain(&runs)
                .all(|r| r.iter().any(|(p, _)| p == pts))
        })
        .collect();
    let pick = |r: &Frames| -> Vec<Vec<u8>> {
        common
            .iter()
            .map(|pts| r.iter().find(|(p, _)| p == pts).unwrap().1.clone())
            .collect()
    };
    let (rgb, per_frame) = (pick(&rgb), pick(&per_frame));
    let base = flicker(w, h, &rgb, &per_frame);
    println!("| 0 | - | {base:.4} | 100 % | 0 |");
    for ((smoothing, motion), run) in settings.into_iter().zip(&runs) {
        let masks = pick(run);
        let f = flicker(w, h, &rgb, &masks);
        println!(
            "| {smoothing} | {motion} | {f:.4} | {:.1} % | {:.4} |",
            100.0 * f / base,
            drift(&masks, &per_frame)
        );
    }
}

/// The live runs: default properties, `motion-compensation=false` and
/// `keep-up=false`.
fn live_table(seconds: u64, extra: &str) {
    println!(
        "## Live: videotestsrc 640x480 RGBA at 30 fps, {seconds} s, into fakesink sync=true\n"
    );
    println!(
        "| element properties | out fps | own latency ms | pipeline latency ms | most late ms (after running time) | over the latency ms | mean mask age ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for props in ["", "motion-compensation=false", "keep-up=false"] {
        let props = format!("{props} {extra}").trim().to_string();
        let f = live_run(&props, seconds);
        println!(
            "| {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            if props.is_empty() {
                "(defaults)"
            } else {
                &props
            },
            f.fps,
            f.own_latency_ms,
            f.pipeline_latency_ms,
            f.max_late_ms,
            f.max_over_latency_ms,
            f.mean_mask_age_ms
        );
        let _ = f.frames;
    }
}
