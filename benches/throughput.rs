// SPDX-License-Identifier: MPL-2.0
//! `make bench`: the element beside the bare model and beside rembg, in one
//! run, on one machine, with the same ONNX Runtime and model and the same
//! threads. Prints markdown tables; timings are medians of several runs.
//!
//! The element's ms a frame are its steady rate: from the output of the
//! first batch's last frame to the last output, so that its start (ONNX
//! Runtime's or OpenVINO's first, cold run, which the bare session also
//! leaves out) is not spread over a few frames; the time to the first
//! output is given beside it.
//!
//! Environment: BENCH_RUNS (default 3), BENCH_FRAMES (frames per element run,
//! default 12), BENCH_REMBG_PYTHON (default .deps/rembg-venv/bin/python; set
//! it empty to skip rembg), and for the GPU (bench/gpu_bench.sh):
//! BENCH_PROVIDER (cpu, cuda, auto; default cpu), BENCH_MODEL (an .onnx
//! path; default models/u2netp.onnx), BENCH_BATCHES (default 1,4),
//! BENCH_U2NETFAST_JSON (u2net-fast's figures from bench/u2netfast_bench.py),
//! BENCH_GFLOP_PER_FRAME (the model's cost, for the throughput it reaches),
//! BENCH_CONV_SEARCH (cuDNN's: heuristic, exhaustive, default; default
//! heuristic, for the bare session and the element alike).
//! On the CPU: BENCH_PROVIDER=openvino, BENCH_PRECISION (fp32, bf16),
//! BENCH_THREADS (0: every core); BENCH_SUMMARY=1 measures only the bare
//! session at 320x320 and the element (composite, batch 4) at 1080p and 4K,
//! each right after its bare session, and prints one `summary` JSON line
//! (bench/cpu_providers.py runs it once per provider and precision).

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use gst::prelude::*;
use gst_video::prelude::*;
use gstu2netmatte::matte::{Composite, Matter, Mode, OutFrame, to_rgba};
use gstu2netmatte::model::{ConvSearch, CudaOptions, Model, ModelOptions, Precision, Provider};
use gstu2netmatte::prep::{Frame, PixelLayout, Preparer};
use gstu2netmatte::runtime::Build;

const RESOLUTIONS: [(&str, u32, u32); 4] = [
    ("720p", 1280, 720),
    ("1080p", 1920, 1080),
    ("4K", 3840, 2160),
    ("8K", 7680, 4320),
];

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
    let photo = Path::new(&common::top()).join(".deps/photos/motorcycle_left.png");
    assert!(
        photo.is_file(),
        "{} is missing: run make setup",
        photo.display()
    );
    let pipeline = common::pipeline(&format!(
        "filesrc location={} ! pngdec ! videoconvert ! videoscale method=lanczos ! \
         video/x-raw,format=RGB,width={w},height={h},pixel-aspect-ratio=1/1 ! appsink name=sink",
        photo.display()
    ));
    let sink = common::app_sink(&pipeline, "sink");
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

/// Packed RGB as a buffer laid out as `info` says.
fn rgb_buffer(data: &[u8], info: &gst_video::VideoInfo) -> gst::Buffer {
    let mut buffer = gst::Buffer::with_size(info.size()).unwrap();
    {
        let b = buffer.get_mut().unwrap();
        let mut f = gst_video::VideoFrameRef::from_buffer_ref_writable(b, info).unwrap();
        let stride = f.plane_stride()[0] as usize;
        let plane = f.plane_data_mut(0).unwrap();
        for (y, row) in data.chunks_exact(info.width() as usize * 3).enumerate() {
            plane[y * stride..y * stride + row.len()].copy_from_slice(row);
        }
    }
    buffer
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
    provider: &'static str,
    precision: &'static str,
    threads: usize,
    /// The cudnn-conv-search nick.
    conv_search: &'static str,
    model_path: PathBuf,
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
        let (model, runs) = (&mut self.model, self.runs.max(3));
        let samples = gstu2netmatte::priority::on_inference_priority(|| {
            model.run(&input, batch, &mut masks).unwrap();
            (0..runs)
                .map(|_| {
                    time_ms(|| {
                        model.run(&input, batch, &mut masks).unwrap();
                    }) / batch as f64
                })
                .collect()
        })
        .unwrap();
        median(samples)
    }

    /// Preparation of one frame: ms. With `copy`, also the frame's colours
    /// into an RGBA output, as the element's RGBA modes do on arrival.
    fn prep(&self, name: &str, copy: bool) -> f64 {
        let (w, h, data) = self.photo(name);
        let (mh, mw) = self.model.input_size();
        let mut p = Preparer::new(mw, mh, self.model.normalization())
            .with_layout(self.model.input_layout());
        let mut out = vec![0f32; p.tensor_len()];
        let mut rgba = vec![0u8; (w * h * 4) as usize];
        let mut once = || {
            let frame = rgb_frame(data, w, h);
            let rgba_frame = |data| OutFrame {
                data,
                width: w,
                height: h,
                stride: 4 * w as usize,
            };
            p.prepare(&frame, &mut out).unwrap();
            if copy {
                to_rgba(&frame, rgba_frame(&mut rgba)).unwrap();
            }
        };
        once();
        median((0..7).map(|_| time_ms(&mut once)).collect())
    }

    /// The model's own mask of a photo, at the model's size.
    fn small_mask(&mut self, name: &str) -> (Vec<u8>, (u32, u32)) {
        let (w, h, data) = self.photo(name);
        let (mh, mw) = self.model.input_size();
        let mut p = Preparer::new(mw, mh, self.model.normalization())
            .with_layout(self.model.input_layout());
        let mut tensor = vec![0f32; p.tensor_len()];
        p.prepare(&rgb_frame(data, w, h), &mut tensor).unwrap();
        let mut masks = Vec::new();
        let model = &mut self.model;
        let size = gstu2netmatte::priority::on_inference_priority(|| {
            model.run(&tensor, 1, &mut masks).unwrap()
        })
        .unwrap();
        (masks, size)
    }

    /// Building one output frame from the photo's own model-size mask: ms.
    fn compose(&mut self, name: &str, mode: Mode) -> f64 {
        let (small, (sw, sh)) = self.small_mask(name);
        let (w, h, data) = self.photo(name);
        let bpp = if mode == Mode::Mask { 1 } else { 4 };
        let mut out = vec![0u8; (w * h) as usize * bpp];
        let mut m = Matter::new();
        let mut copied = out.clone();
        if mode != Mode::Mask {
            let out = OutFrame {
                data: &mut copied,
                width: w,
                height: h,
                stride: w as usize * bpp,
            };
            to_rgba(&rgb_frame(data, w, h), out).unwrap();
        }
        // The mask applied to the frame's copy, as the element does when
        // the mask is in (the copy was made on arrival).
        let mut once = |out: &mut [u8]| {
            out.copy_from_slice(&copied);
            let started = Instant::now();
            m.apply(
                mode,
                &small,
                (sw, sh),
                OutFrame {
                    data: out,
                    width: w,
                    height: h,
                    stride: w as usize * bpp,
                },
                Composite::default(),
            )
            .unwrap();
            started.elapsed().as_secs_f64() * 1000.0
        };
        once(&mut out);
        median((0..7).map(|_| once(&mut out)).collect())
    }

    /// The element's soft mask of one frame (batch 1), rows packed.
    fn element_mask(&self, name: &str) -> Vec<u8> {
        let (w, h, data) = self.photo(name);
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w, h)
            .build()
            .unwrap();
        let pipeline = common::pipeline(&format!(
            "appsrc name=src format=time ! u2netmatte mode=mask batch-size=1 provider={} \
             precision={} threads={} cudnn-conv-search={} model={} ! appsink name=sink sync=false",
            self.provider,
            self.precision,
            self.threads,
            self.conv_search,
            self.model_path.display()
        ));
        let src = common::app_src(&pipeline, "src");
        let sink = common::app_sink(&pipeline, "sink");
        src.set_caps(Some(&info.to_caps().unwrap()));
        pipeline.set_state(gst::State::Playing).unwrap();
        src.push_buffer(rgb_buffer(data, &info)).unwrap();
        src.end_of_stream().unwrap();
        let sample = sink.pull_sample().unwrap();
        pipeline.set_state(gst::State::Null).unwrap();
        let out_info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer().unwrap(), &out_info)
                .unwrap();
        let stride = frame.plane_stride()[0] as usize;
        let plane = frame.plane_data(0).unwrap();
        (0..h as usize)
            .flat_map(|y| plane[y * stride..y * stride + w as usize].to_vec())
            .collect()
    }

    /// Frames through `appsrc ! u2netmatte ! fakesink`. The model is loaded
    /// before the clock starts.
    fn element(&self, name: &str, mode: &str, batch: usize) -> ElementRun {
        assert!(
            self.frames > batch,
            "BENCH_FRAMES must exceed the batch size"
        );
        let (w, h, data) = self.photo(name);
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w, h)
            .fps(gst::Fraction::new(30, 1))
            .build()
            .unwrap();
        let template = rgb_buffer(data, &info);
        let (mut steady, mut whole, mut first) = (Vec::new(), Vec::new(), Vec::new());
        let mut stages = Vec::new();
        let mut peak = 0f64;
        for _ in 0..self.runs {
            reset_peak_rss();
            let before = current_rss_mib();
            let pipeline = common::pipeline(&format!(
                "appsrc name=src format=time block=true max-buffers=2 ! \
                 u2netmatte mode={mode} batch-size={batch} provider={} precision={} threads={} \
                 cudnn-conv-search={} model={} stats=true ! fakesink name=out sync=false",
                self.provider,
                self.precision,
                self.threads,
                self.conv_search,
                self.model_path.display()
            ));
            let src = common::app_src(&pipeline, "src");
            src.set_caps(Some(&info.to_caps().unwrap()));
            let outputs = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
            let seen = outputs.clone();
            pipeline
                .by_name("out")
                .unwrap()
                .static_pad("sink")
                .unwrap()
                .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    seen.lock().unwrap().push(Instant::now());
                    gst::PadProbeReturn::Ok
                });
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
            let bus = pipeline.bus().unwrap();
            let mut batches = Vec::new();
            let msg = loop {
                let msg = bus
                    .timed_pop_filtered(
                        gst::ClockTime::from_seconds(600),
                        &[
                            gst::MessageType::Eos,
                            gst::MessageType::Error,
                            gst::MessageType::Element,
                        ],
                    )
                    .expect("the run ends");
                match msg.view() {
                    gst::MessageView::Element(e) => {
                        if let Some(s) = e.structure().filter(|s| s.name() == "u2netmatte-stats") {
                            batches.push(StageFigures::of(s));
                        }
                    }
                    _ => break msg,
                }
            };
            assert_eq!(msg.type_(), gst::MessageType::Eos, "{msg:?}");
            // The first batch's run is the model's cold one.
            stages.push(StageFigures::mean(batches.get(1..).unwrap_or_default()));
            let ended = start.elapsed();
            pipeline.set_state(gst::State::Null).unwrap();
            let outputs = outputs.lock().unwrap();
            assert_eq!(outputs.len(), self.frames, "one output a frame");
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
            steady.push(
                ms(outputs[self.frames - 1] - outputs[batch - 1]) / (self.frames - batch) as f64,
            );
            whole.push(ms(ended) / self.frames as f64);
            first.push(ms(outputs[0] - start));
            peak = peak.max(peak_rss_mib() - before);
        }
        ElementRun {
            ms: median(steady),
            whole_ms: median(whole),
            first_ms: median(first),
            rss: peak,
            stages: StageFigures {
                inference_ms: median(stages.iter().map(|s| s.inference_ms).collect()),
                prepare_ms: median(stages.iter().map(|s| s.prepare_ms).collect()),
                compose_ms: median(stages.iter().map(|s| s.compose_ms).collect()),
            },
        }
    }
}

/// One element configuration's figures, medians over runs.
struct ElementRun {
    /// Steady ms a frame (after the first batch).
    ms: f64,
    /// ms a frame over the whole run, start included.
    whole_ms: f64,
    /// From the first push to the first output.
    first_ms: f64,
    /// Peak RSS the run added, MiB.
    rss: f64,
    /// What the element's `stats` said, a frame, steady batches' mean.
    stages: StageFigures,
}

/// ms a frame in the element's own stages, from its `stats` messages.
#[derive(Debug, Default, Clone, Copy)]
struct StageFigures {
    /// The model's run, per frame of the batch.
    inference_ms: f64,
    /// Preparing a frame on arrival (resizing, and the RGBA copy).
    prepare_ms: f64,
    /// Applying a mask to a frame before it leaves.
    compose_ms: f64,
}

impl StageFigures {
    fn of(s: &gst::StructureRef) -> Self {
        let ms = |name| s.get::<f64>(name).unwrap_or(f64::NAN);
        let frames = f64::from(s.get::<u32>("frames").unwrap_or(1).max(1));
        Self {
            inference_ms: ms("inference-ms") / frames,
            prepare_ms: ms("prepare-ms") / frames,
            compose_ms: ms("compose-ms") / frames,
        }
    }

    fn mean(batches: &[Self]) -> Self {
        let n = batches.len().max(1) as f64;
        let sum = |f: fn(&Self) -> f64| batches.iter().map(f).sum::<f64>() / n;
        Self {
            inference_ms: sum(|s| s.inference_ms),
            prepare_ms: sum(|s| s.prepare_ms),
            compose_ms: sum(|s| s.compose_ms),
        }
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
        .unwrap_or_else(|_| format!("{}/.deps/rembg-venv/bin/python", common::top()));
    if python.is_empty() || !Path::new(&python).exists() {
        eprintln!("rembg skipped: no {python} (make bench installs it)");
        return None;
    }
    let dir = PathBuf::from(common::top()).join("target/bench-frames");
    std::fs::create_dir_all(&dir).unwrap();
    let mut args = vec![
        format!("{}/bench/rembg_bench.py", common::top()),
        format!("{}/models", common::top()),
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
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // binary too, and must not spend minutes timing things.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    gst::init().unwrap();
    gstu2netmatte::plugin_register_static().unwrap();
    let (provider_nick, provider) = match std::env::var("BENCH_PROVIDER").as_deref() {
        Ok("cuda") => ("cuda", Provider::Cuda),
        Ok("auto") => ("auto", Provider::Auto),
        Ok("openvino") => ("openvino", Provider::OpenVino),
        _ => ("cpu", Provider::Cpu),
    };
    let (precision_nick, precision) = match std::env::var("BENCH_PRECISION").as_deref() {
        Ok("bf16") => ("bf16", Precision::Bf16),
        _ => ("fp32", Precision::Fp32),
    };
    // As the element does: OpenVINO and bf16 load ONNX Runtime's OpenVINO
    // build (the bare session and the element share the process's).
    let build = if provider == Provider::OpenVino || precision == Precision::Bf16 {
        Build::OpenVino
    } else {
        Build::Plain
    };
    let runtime =
        gstu2netmatte::runtime::load_build(None, build, None, ort::logging::LogLevel::Warning)
            .unwrap()
            .runtime;
    let threads_setting = common::env_usize("BENCH_THREADS", 0);
    let model_path = std::env::var_os("BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&common::top()).join("models/u2netp.onnx"));
    let batches: Vec<usize> = std::env::var("BENCH_BATCHES")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .filter_map(|b| b.trim().parse().ok())
        .collect();
    let (conv_search_nick, conv_search) = match std::env::var("BENCH_CONV_SEARCH").as_deref() {
        Ok("exhaustive") => ("exhaustive", ConvSearch::Exhaustive),
        Ok("default") => ("default", ConvSearch::Default),
        _ => ("heuristic", ConvSearch::Heuristic),
    };
    let options = ModelOptions {
        provider,
        device_id: 0,
        cuda: CudaOptions {
            conv_search,
            ..Default::default()
        },
        precision,
        threads: threads_setting,
        cache_dir: gstu2netmatte::model::default_cache_dir(),
        ..Default::default()
    };
    // Loaded and run at the model's priority, as the element does: the
    // threads a runtime starts (OpenVINO's TBB workers are the process's,
    // shared with the element's session) keep the priority of the thread
    // that started them, and at the streaming threads' priority they would
    // take the cores from the element's preparation.
    let model = gstu2netmatte::priority::on_inference_priority(|| {
        Model::load(&runtime, &model_path, &options)
    })
    .unwrap()
    .unwrap();
    let used = model.provider();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut bench = Bench {
        runs: common::env_usize("BENCH_RUNS", 3),
        frames: common::env_usize("BENCH_FRAMES", 12),
        provider: provider_nick,
        precision: precision_nick,
        threads: threads_setting,
        conv_search: conv_search_nick,
        model_path: model_path.clone(),
        model,
        photos: RESOLUTIONS
            .iter()
            .map(|&(name, w, h)| (name, w, h, photo_frame(w, h)))
            .collect(),
    };
    println!(
        "# u2netmatte benchmark: {}, ONNX Runtime {}, {used} ({threads} CPU threads), median of {} runs, {} frames a run\n",
        model_path.display(),
        runtime.library().display(),
        bench.runs,
        bench.frames
    );

    if std::env::var("BENCH_SUMMARY").is_ok_and(|v| v == "1") {
        let bare = bench.bare(1);
        let mut fields = vec![
            format!("\"provider\": \"{used}\""),
            format!("\"bare_ms\": {bare:.2}"),
        ];
        for name in ["1080p", "4K"] {
            // The element's own session: the same batch.
            let bare = bench.bare(4);
            let run = bench.element(name, "composite", 4);
            fields.push(format!(
                "\"{name}\": {{\"bare_ms\": {bare:.2}, \"element_ms\": {:.2}, \
                 \"element_whole_ms\": {:.2}, \"first_ms\": {:.1}, \"inference_ms\": {:.2}, \
                 \"prepare_ms\": {:.2}, \"compose_ms\": {:.2}}}",
                run.ms,
                run.whole_ms,
                run.first_ms,
                run.stages.inference_ms,
                run.stages.prepare_ms,
                run.stages.compose_ms
            ));
        }
        println!("summary {{{}}}", fields.join(", "));
        return;
    }

    let gflop: Option<f64> = std::env::var("BENCH_GFLOP_PER_FRAME")
        .ok()
        .and_then(|v| v.parse().ok());
    println!("## Bare model (ORT session on ready tensors)\n");
    println!("| batch | ms/frame | frames/s | TFLOP/s reached |\n|---|---|---|---|");
    let mut bare_by_batch = Vec::new();
    for &b in &batches {
        let ms = bench.bare(b);
        let tflops = gflop.map_or("-".into(), |g| format!("{:.2}", g * fps(ms) / 1000.0));
        println!("| {b} | {ms:.2} | {:.2} | {tflops} |", fps(ms));
        bare_by_batch.push((b, ms));
    }
    println!();

    println!("## Stages (ms a frame, resizing and rows spread over the cores)\n");
    println!(
        "Preparation: the model's input alone, and with the RGBA copy the RGBA modes make on \
         arrival. Then the mask applied to that copy (composite, alpha), or scaled into GRAY8 \
         (mask).\n"
    );
    println!(
        "| resolution | preparation | with the copy | composite | alpha | mask |\n\
         |---|---|---|---|---|---|"
    );
    for &(name, w, h) in &RESOLUTIONS {
        println!(
            "| {name} ({w}x{h}) | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            bench.prep(name, false),
            bench.prep(name, true),
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
        "| resolution | mode | batch | ms/frame | frames/s | bare ms/frame | / bare | / rembg | whole run ms/frame | first output ms | RSS added MiB |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut ratios = std::collections::HashMap::<(&str, usize), Vec<f64>>::new();
    let mut element_ms = std::collections::HashMap::<(&str, &str, usize), f64>::new();
    for name in ["1080p", "4K"] {
        for mode in ["composite", "alpha", "mask"] {
            for &batch in &batches {
                let bare = bench.bare(batch);
                let run = bench.element(name, mode, batch);
                let (ms, rss) = (run.ms, run.rss);
                ratios.entry((name, batch)).or_default().push(bare / ms);
                element_ms.insert((name, mode, batch), ms);
                let vs_rembg = rembg.as_ref().map_or("-".to_string(), |r| {
                    let theirs = if mode == "mask" {
                        r.mask[name]
                    } else {
                        r.cutout[name]
                    };
                    format!("{:.2}", theirs / ms)
                });
                println!(
                    "| {name} | {mode} | {batch} | {ms:.1} | {:.2} | {bare:.1} | {:.3} | {vs_rembg} | {:.1} | {:.0} | {rss:.0} |",
                    fps(ms),
                    bare / ms,
                    run.whole_ms,
                    run.first_ms
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
        for &batch in &batches {
            let bare = bench.bare(batch);
            let run = bench.element(name, "composite", batch);
            let (ms, rss) = (run.ms, run.rss);
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

    if let Some(fast) = u2netfast(&bench, &["1080p", "4K"]) {
        println!("\n## u2net-fast 1.0.0 (process_batch + mask_batch, batch 5, frames in memory)\n");
        println!(
            "| resolution | u2net-fast images/s | element batch | element images/s | element / u2net-fast |\n|---|---|---|---|---|"
        );
        for name in ["1080p", "4K"] {
            for &batch in &batches {
                if let Some(ms) = element_ms.get(&(name, "composite", batch)) {
                    let theirs = 1000.0 / fast.ms[name];
                    println!(
                        "| {name} | {theirs:.1} | {batch} | {:.1} | {:.2} |",
                        fps(*ms),
                        fps(*ms) / theirs
                    );
                }
            }
        }
        for (name, mae, iou) in &fast.mask_agreement {
            println!(
                "masks of the same {name} frame, element against u2net-fast: MAE {mae:.2} %, IoU {iou:.4}"
            );
        }
    }
}

struct U2NetFast {
    ms: std::collections::HashMap<String, f64>,
    /// (resolution, MAE %, IoU at 0.5) of the element's mask against theirs.
    mask_agreement: Vec<(String, f64, f64)>,
}

/// u2net-fast on the same frames, when BENCH_U2NETFAST_PYTHON names a Python
/// with torch and u2net_fast (a GPU machine: it runs on CUDA).
fn u2netfast(bench: &Bench, names: &[&str]) -> Option<U2NetFast> {
    let python = std::env::var("BENCH_U2NETFAST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())?;
    let dir = PathBuf::from(common::top()).join("target/bench-frames");
    std::fs::create_dir_all(&dir).unwrap();
    let out_dir = bench
        .model_path
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut args = vec![
        format!("{}/bench/u2netfast_bench.py", common::top()),
        out_dir.display().to_string(),
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
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "u2net-fast failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let value: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).ok()?;
    let mut fast = U2NetFast {
        ms: Default::default(),
        mask_agreement: Vec::new(),
    };
    for name in names {
        let (w, h, _) = bench.photo(name);
        fast.ms.insert(
            name.to_string(),
            value["frames"][format!("{w}x{h}")]["ms_per_image"].as_f64()?,
        );
        let theirs = std::fs::read(out_dir.join(format!("u2netfast_mask_{w}x{h}.raw"))).ok()?;
        let ours = bench.element_mask(name);
        if theirs.len() == ours.len() {
            let mae = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| a.abs_diff(*b) as f64)
                .sum::<f64>()
                / ours.len() as f64
                / 255.0
                * 100.0;
            let (mut inter, mut union) = (0usize, 0usize);
            for (a, b) in ours.iter().zip(&theirs) {
                let (a, b) = (*a > 127, *b > 127);
                inter += (a && b) as usize;
                union += (a || b) as usize;
            }
            fast.mask_agreement
                .push((name.to_string(), mae, inter as f64 / union.max(1) as f64));
        }
    }
    Some(fast)
}
