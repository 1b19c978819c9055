// SPDX-License-Identifier: MPL-2.0
//! `make bench`: the element beside the bare model and beside rembg, in one
//! run, on one machine, with the same ONNX Runtime and model and the same
//! threads. Prints markdown tables; timings are medians of several runs.
//!
//! Environment: BENCH_RUNS (default 3), BENCH_FRAMES (frames per element run,
//! default 8), BENCH_REMBG_PYTHON (default .deps/rembg-venv/bin/python; set
//! it empty to skip rembg).

use std::path::{Path, PathBuf};
use std::time::Instant;

use gst::prelude::*;
use gst_video::prelude::*;
use gstu2netmatte::matte::{Composite, Matter, Mode, OutFrame};
use gstu2netmatte::model::{Model, ModelOptions, Provider};
use gstu2netmatte::prep::{Frame, PixelLayout, Preparer};

const TOP: &str = env!("CARGO_MANIFEST_DIR");

const RESOLUTIONS: [(&str, u32, u32); 4] = [
    ("720p", 1280, 720),
    ("1080p", 1920, 1080),
    ("4K", 3840, 2160),
    ("8K", 7680, 4320),
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time_ms(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1000.0
}

/// Peak RSS since the last reset, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn current_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn reset_peak_rss() {
    // Linux: writing 5 resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A real photo scaled to `w` x `h`, packed RGB.
fn photo_frame(w: u32, h: u32) -> Vec<u8> {
    let photo = Path::new(TOP).join(".deps/photos/motorcycle_left.png");
    assert!(
        photo.is_file(),
        "{} is missing: run make setup",
        photo.display()
    );
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! pngdec ! videoconvert ! videoscale method=lanczos ! \
         video/x-raw,format=RGB,width={w},height={h},pixel-aspect-ratio=1/1 ! appsink name=sink",
        photo.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let sample = sink.pull_sample().unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let buffer = sample.buffer().unwrap();
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).unwrap();
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data(0).unwrap();
    let row = w as usize * 3;
    (0..h as usize)
        .flat_map(|y| data[y * stride..y * stride + row].iter().copied())
        .collect()
}

fn rgb_frame(data: &[u8], w: u32, h: u32) -> Frame<'_> {
    Frame {
        data,
        width: w,
        height: h,
        stride: w as usize * 3,
        layout: PixelLayout::RGB,
    }
}

struct Bench {
    runs: usize,
    frames: usize,
    model: Model,
    photos: Vec<(&'static str, u32, u32, Vec<u8>)>,
}

impl Bench {
    fn photo(&self, name: &str) -> (u32, u32, &[u8]) {
        let (_, w, h, data) = self.photos.iter().find(|p| p.0 == name).unwrap();
        (*w, *h, data)
    }

    /// The ONNX Runtime session alone on ready-made tensors: ms a frame.
    fn bare(&mut self, batch: usize) -> f64 {
        let input = vec![0.5f32; batch * self.model.frame_len()];
        let mut masks = Vec::new();
        self.model.run(&input, batch, &mut masks).unwrap();
        let samples = (0..self.runs.max(3))
            .map(|_| {
                time_ms(|| {
                    self.model.run(&input, batch, &mut masks).unwrap();
                }) / batch as f64
            })
            .collect();
        median(samples)
    }

    /// Preparation of one frame: ms.
    fn prep(&self, name: &str) -> f64 {
        let (w, h, data) = self.photo(name);
        let (mh, mw) = self.model.input_size();
        let mut p = Preparer::new(mw, mh, self.model.normalization());
        let mut out = vec![0f32; p.tensor_len()];
        p.prepare(&rgb_frame(data, w, h), &mut out).unwrap();
        median(
            (0..7)
                .map(|_| time_ms(|| p.prepare(&rgb_frame(data, w, h), &mut out).unwrap()))
                .collect(),
        )
    }

    /// Building one output frame from a model-size mask: ms.
    fn compose(&self, name: &str, mode: Mode) -> f64 {
        let (w, h, data) = self.photo(name);
        let small: Vec<u8> = (0..320 * 320).map(|i| (i % 256) as u8).collect();
        let bpp = if mode == Mode::Mask { 1 } else { 4 };
        let mut out = vec![0u8; (w * h) as usize * bpp];
        let mut m = Matter::new();
        let mut once = |out: &mut [u8]| {
            m.render(
                mode,
                &small,
                (320, 320),
                Some(&rgb_frame(data, w, h)),
                OutFrame {
                    data: out,
                    width: w,
                    height: h,
                    stride: w as usize * bpp,
                },
                Composite::default(),
            )
            .unwrap()
        };
        once(&mut out);
        median((0..7).map(|_| time_ms(|| once(&mut out))).collect())
    }

    /// Frames through `appsrc ! u2netmatte ! fakesink`: (ms a frame, peak
    /// RSS MiB). The model is loaded before the clock starts.
    fn element(&self, name: &str, mode: &str, batch: usize) -> (f64, f64) {
        let (w, h, data) = self.photo(name);
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w, h)
            .fps(gst::Fraction::new(30, 1))
            .build()
            .unwrap();
        let mut template = gst::Buffer::with_size(info.size()).unwrap();
        {
            let b = template.get_mut().unwrap();
            let mut f = gst_video::VideoFrameRef::from_buffer_ref_writable(b, &info).unwrap();
            let stride = f.plane_stride()[0] as usize;
            let plane = f.plane_data_mut(0).unwrap();
            for (y, row) in data.chunks_exact(w as usize * 3).enumerate() {
                plane[y * stride..y * stride + row.len()].copy_from_slice(row);
            }
        }
        let mut samples = Vec::new();
        let mut peak = 0f64;
        for _ in 0..self.runs {
            reset_peak_rss();
            let before = current_rss_mib();
            let pipeline = gst::parse::launch(&format!(
                "appsrc name=src format=time block=true max-buffers=2 ! \
                 u2netmatte mode={mode} batch-size={batch} provider=cpu ! fakesink sync=false"
            ))
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
            let src = pipeline
                .by_name("src")
                .unwrap()
                .downcast::<gst_app::AppSrc>()
                .unwrap();
            src.set_caps(Some(&info.to_caps().unwrap()));
            pipeline.set_state(gst::State::Playing).unwrap();
            let start = Instant::now();
            for n in 0..self.frames {
                // Shares the template's memory: the element only reads it.
                let mut b = template.copy();
                let bm = b.get_mut().unwrap();
                bm.set_pts(gst::ClockTime::from_mseconds(n as u64 * 33));
                src.push_buffer(b).unwrap();
            }
            src.end_of_stream().unwrap();
            let msg = pipeline
                .bus()
                .unwrap()
                .timed_pop_filtered(
                    gst::ClockTime::from_seconds(600),
                    &[gst::MessageType::Eos, gst::MessageType::Error],
                )
                .expect("the run ends");
            assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
            samples.push(start.elapsed().as_secs_f64() * 1000.0 / self.frames as f64);
            pipeline.set_state(gst::State::Null).unwrap();
            peak = peak.max(peak_rss_mib() - before);
        }
        (median(samples), peak)
    }
}

#[derive(Default)]
struct Rembg {
    cutout: std::collections::HashMap<String, f64>,
    mask: std::collections::HashMap<String, f64>,
    peak_rss: f64,
    version: String,
}

/// Runs rembg on the same frames, written as raw RGB.
fn rembg(bench: &Bench, names: &[&str]) -> Option<Rembg> {
    let python = std::env::var("BENCH_REMBG_PYTHON")
        .unwrap_or_else(|_| format!("{TOP}/.deps/rembg-venv/bin/python"));
    if python.is_empty() || !Path::new(&python).exists() {
        eprintln!("rembg skipped: no {python} (make bench installs it)");
        return None;
    }
    let dir = PathBuf::from(TOP).join("target/bench-frames");
    std::fs::create_dir_all(&dir).unwrap();
    let mut args = vec![
        format!("{TOP}/bench/rembg_bench.py"),
        format!("{TOP}/models"),
        bench.runs.to_string(),
    ];
    for name in names {
        let (w, h, data) = bench.photo(name);
        let path = dir.join(format!("{name}.rgb"));
        std::fs::write(&path, data).unwrap();
        args.push(format!("{}:{w}x{h}", path.display()));
    }
    let out = std::process::Command::new(&python)
        .args(&args)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("rembg failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let json = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let mut r = Rembg {
        peak_rss: value["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
        version: value["rembg"].as_str().unwrap_or("?").to_string(),
        ..Default::default()
    };
    for name in names {
        let (w, h, _) = bench.photo(name);
        let t = &value["frames"][format!("{w}x{h}")];
        r.cutout
            .insert(name.to_string(), t["cutout"].as_f64().unwrap());
        r.mask.insert(name.to_string(), t["mask"].as_f64().unwrap());
    }
    Some(r)
}

fn fps(ms: f64) -> f64 {
    1000.0 / ms
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    gst::init().unwrap();
    gstu2netmatte::plugin_register_static().unwrap();
    let runtime = gstu2netmatte::runtime::load(None, None, ort::logging::LogLevel::Warning)
        .unwrap()
        .runtime;
    let options = ModelOptions {
        provider: Provider::Cpu,
        device_id: 0,
    };
    let model = Model::load(
        &runtime,
        &Path::new(TOP).join("models/u2netp.onnx"),
        &options,
    )
    .unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut bench = Bench {
        runs: env_usize("BENCH_RUNS", 3),
        frames: env_usize("BENCH_FRAMES", 8),
        model,
        photos: RESOLUTIONS
            .iter()
            .map(|&(name, w, h)| (name, w, h, photo_frame(w, h)))
            .collect(),
    };
    println!(
        "# u2netmatte benchmark: U2NetP, ONNX Runtime {}, CPU ({threads} threads), median of {} runs, {} frames a run\n",
        runtime.library().display(),
        bench.runs,
        bench.frames
    );

    let bare1 = bench.bare(1);
    let bare4 = bench.bare(4);
    println!("## Bare model (ORT session on ready 320x320 tensors)\n");
    println!("| batch | ms/frame | frames/s |\n|---|---|---|");
    println!("| 1 | {bare1:.1} | {:.2} |", fps(bare1));
    println!("| 4 | {bare4:.1} | {:.2} |\n", fps(bare4));

    println!("## Stages (ms a frame, resizing and rows spread over the cores)\n");
    println!("| resolution | preparation | composite | alpha | mask |\n|---|---|---|---|---|");
    for &(name, w, h) in &RESOLUTIONS {
        println!(
            "| {name} ({w}x{h}) | {:.1} | {:.1} | {:.1} | {:.1} |",
            bench.prep(name),
            bench.compose(name, Mode::Composite),
            bench.compose(name, Mode::Alpha),
            bench.compose(name, Mode::Mask)
        );
    }
    println!();

    let rembg = rembg(&bench, &["1080p", "4K"]);
    println!("## Element (appsrc ! u2netmatte ! fakesink, RGB in)\n");
    println!(
        "The bare model is measured again right before each row (this machine's timings drift); \
         RSS is what the element's run added to the process at its peak.\n"
    );
    println!(
        "| resolution | mode | batch | ms/frame | frames/s | bare ms/frame | / bare | / rembg | RSS added MiB |\n|---|---|---|---|---|---|---|---|---|"
    );
    let mut ratios = std::collections::HashMap::<(&str, usize), Vec<f64>>::new();
    for name in ["1080p", "4K"] {
        for mode in ["composite", "alpha", "mask"] {
            for batch in [1usize, 4] {
                let bare = bench.bare(batch);
                let (ms, rss) = bench.element(name, mode, batch);
                ratios.entry((name, batch)).or_default().push(bare / ms);
                let vs_rembg = rembg.as_ref().map_or("-".to_string(), |r| {
                    let theirs = if mode == "mask" {
                        r.mask[name]
                    } else {
                        r.cutout[name]
                    };
                    format!("{:.2}", theirs / ms)
                });
                println!(
                    "| {name} | {mode} | {batch} | {ms:.1} | {:.2} | {bare:.1} | {:.3} | {vs_rembg} | {rss:.0} |",
                    fps(ms),
                    bare / ms
                );
            }
        }
    }
    println!();

    for ((name, batch), r) in {
        let mut v: Vec<_> = ratios.into_iter().collect();
        v.sort_by_key(|(k, _)| *k);
        v
    } {
        println!(
            "element / bare, {name}, batch {batch}, median over modes: {:.3}",
            median(r)
        );
    }
    println!();

    println!("## Scaling (mode=composite)\n");
    println!(
        "| resolution | batch | ms/frame | bare ms/frame | / bare | RSS added MiB |\n|---|---|---|---|---|---|"
    );
    for name in ["720p", "1080p", "4K", "8K"] {
        for batch in [1usize, 4] {
            let bare = bench.bare(batch);
            let (ms, rss) = bench.element(name, "composite", batch);
            println!(
                "| {name} | {batch} | {ms:.1} | {bare:.1} | {:.3} | {rss:.0} |",
                bare / ms
            );
        }
    }
    println!();

    if let Some(r) = rembg {
        println!(
            "## rembg {} (remove() with the same u2netp.onnx)\n",
            r.version
        );
        println!("| resolution | cut-out ms/frame | only_mask ms/frame |\n|---|---|---|");
        for name in ["1080p", "4K"] {
            println!("| {name} | {:.1} | {:.1} |", r.cutout[name], r.mask[name]);
        }
        println!("\nrembg peak RSS: {:.0} MiB", r.peak_rss);
    }
}
