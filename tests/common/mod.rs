// SPDX-License-Identifier: MPL-2.0
//! Helpers shared by the integration tests: plugin registration, synthetic
//! scenes with known ground truth, frame packing and mask comparison.
#![allow(dead_code)]

pub mod server;

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_video::prelude::*;

pub const TOP: &str = env!("CARGO_MANIFEST_DIR");

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstu2netmatte::plugin_register_static().expect("u2netmatte registers");
    });
}

/// A u2netmatte element with `props` set; enum properties may be given as
/// their nick (`("mode", "mask".to_value())`).
pub fn element(props: &[(&str, glib::Value)]) -> gst::Element {
    init();
    let el = gst::ElementFactory::make("u2netmatte")
        .build()
        .expect("u2netmatte can be made");
    for (name, value) in props {
        let pspec = el
            .find_property(name)
            .unwrap_or_else(|| panic!("no property {name}"));
        match value.get::<&str>() {
            Ok(s) if pspec.value_type() != glib::Type::STRING => el.set_property_from_str(name, s),
            _ => el.set_property_from_value(name, value),
        }
    }
    el
}

/// A playing harness around a u2netmatte element with `props`, fed as a
/// file source would feed it (not live).
pub fn harness(props: &[(&str, glib::Value)]) -> gst_check::Harness {
    harness_around(element(props), false)
}

/// A playing harness around `el`. The harness answers LATENCY queries as
/// a live source does; unless `live`, its answer is changed to not live.
pub fn harness_around(el: gst::Element, live: bool) -> gst_check::Harness {
    if !live {
        el.static_pad("sink").unwrap().add_probe(
            gst::PadProbeType::QUERY_UPSTREAM | gst::PadProbeType::PULL,
            |_, info| {
                if let Some(gst::PadProbeData::Query(q)) = info.data.as_mut()
                    && let gst::QueryViewMut::Latency(l) = q.view_mut()
                {
                    let (_, min, max) = l.result();
                    l.set(false, min, max);
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
    let mut h = gst_check::Harness::with_element(&el, Some("sink"), Some("src"));
    h.play();
    h
}

/// Pulls events until EOS (each pull waits up to the harness' 60 s).
#[track_caller]
pub fn wait_for_eos(h: &mut gst_check::Harness) {
    loop {
        let ev = h.pull_event().expect("EOS was not forwarded");
        if ev.type_() == gst::EventType::Eos {
            return;
        }
    }
}

pub fn info(format: gst_video::VideoFormat, width: u32, height: u32) -> gst_video::VideoInfo {
    init();
    gst_video::VideoInfo::builder(format, width, height)
        .fps(gst::Fraction::new(25, 1))
        .build()
        .unwrap()
}

/// A packed RGB picture and, per pixel, whether it belongs to the object.
pub struct Scene {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    pub truth: Vec<bool>,
}

#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Disc,
    Box,
}

/// A coloured disc or box on a noisy gradient background.
pub fn scene(width: u32, height: u32, shape: Shape, seed: u32) -> Scene {
    let (w, h) = (width as f64, height as f64);
    let (cx, cy) = (w * 0.5, h * 0.52);
    let r = 0.3 * w.min(h);
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 41) as i32 - 20
    };
    let mut rgb = Vec::with_capacity((width * height * 3) as usize);
    let mut truth = Vec::with_capacity((width * height) as usize);
    for y in 0..height {
        for x in 0..width {
            let (fx, fy) = (x as f64 + 0.5, y as f64 + 0.5);
            let inside = match shape {
                Shape::Disc => (fx - cx).powi(2) + (fy - cy).powi(2) <= r * r,
                Shape::Box => (fx - cx).abs() <= r * 1.1 && (fy - cy).abs() <= r * 0.8,
            };
            let px = if inside {
                [220, 40, 40]
            } else {
                let t = fx / w;
                let u = fy / h;
                let base = [40.0 + 50.0 * t, 90.0 + 70.0 * u, 140.0 + 60.0 * t];
                base.map(|b| (b as i32 + noise()).clamp(0, 255) as u8)
            };
            rgb.extend_from_slice(&px);
            truth.push(inside);
        }
    }
    Scene {
        width,
        height,
        rgb,
        truth,
    }
}

/// Lays packed RGB out as a frame of `info` (any of the input formats),
/// with GStreamer's strides.
pub fn frame_buffer(rgb: &[u8], info: &gst_video::VideoInfo) -> gst::Buffer {
    let layout = gstu2netmatte::u2netmatte::caps::layout_of(info.format()).expect("input format");
    let mut buffer = gst::Buffer::with_size(info.size()).unwrap();
    {
        let buffer = buffer.get_mut().unwrap();
        let mut frame = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, info).unwrap();
        let stride = frame.plane_stride()[0] as usize;
        let data = frame.plane_data_mut(0).unwrap();
        let w = info.width() as usize;
        for (y, src_row) in rgb.chunks_exact(w * 3).enumerate() {
            let row = &mut data[y * stride..];
            for (x, px) in src_row.chunks_exact(3).enumerate() {
                let out = &mut row[x * layout.bytes_per_pixel..];
                for c in 0..3 {
                    out[layout.rgb[c]] = px[c];
                }
                if let Some(a) = layout.alpha {
                    out[a] = 255;
                }
            }
        }
    }
    buffer
}

/// The pixels of one plane, rows packed (stride removed).
pub fn packed_plane(buffer: &gst::Buffer, info: &gst_video::VideoInfo) -> Vec<u8> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info).unwrap();
    let stride = frame.plane_stride()[0] as usize;
    let row = info.width() as usize * info.format_info().pixel_stride()[0] as usize;
    let data = frame.plane_data(0).unwrap();
    (0..info.height() as usize)
        .flat_map(|y| data[y * stride..y * stride + row].iter().copied())
        .collect()
}

/// Intersection over union of two binary masks.
pub fn iou(a: &[bool], b: &[bool]) -> f64 {
    assert_eq!(a.len(), b.len());
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

pub fn threshold(mask: &[u8]) -> Vec<bool> {
    mask.iter().map(|&m| m as f64 / 255.0 > 0.5).collect()
}

/// Mean absolute difference in % of full scale.
pub fn mae_percent(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as i64 - *y as i64).unsigned_abs())
        .sum();
    sum as f64 / a.len() as f64 / 255.0 * 100.0
}

pub fn photo(name: &str) -> PathBuf {
    let p = PathBuf::from(TOP).join(".deps/photos").join(name);
    assert!(p.is_file(), "{} is missing: run `make setup`", p.display());
    p
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("u2netmatte-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `pipeline` to EOS or error, within `limit`; returns the error text.
pub fn run_pipeline(pipeline: &gst::Pipeline, limit: Duration) -> Result<(), String> {
    let bus = pipeline.bus().unwrap();
    if pipeline.set_state(gst::State::Playing).is_err() {
        let text = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
            .map(|m| match m.view() {
                gst::MessageView::Error(e) => format!("{} ({:?})", e.error(), e.debug()),
                _ => unreachable!(),
            })
            .unwrap_or_else(|| "state change failed without an error message".into());
        let _ = pipeline.set_state(gst::State::Null);
        return Err(text);
    }
    let deadline = Instant::now() + limit;
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(format!("pipeline did not finish within {limit:?}"));
        }
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(left.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(e) => break Err(format!("{} ({:?})", e.error(), e.debug())),
            _ => {}
        }
    };
    pipeline.set_state(gst::State::Null).unwrap();
    result
}

/// Longest wait for an appsink's next sample: the model takes up to a
/// second a frame on a slow CPU; minutes mean the pipeline is stuck.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(300);

/// Pulls every sample an appsink gets until EOS; panics with the error
/// when the pipeline fails first (a failed pipeline never sends EOS: the
/// test would wait for ever), or when no sample came for [`STALL`]. It
/// takes the pipeline's bus messages while it waits: other messages than
/// errors are dropped.
pub fn collect_samples(sink: &gst_app::AppSink) -> Vec<gst::Sample> {
    let mut top: gst::Object = sink.clone().upcast();
    while let Some(parent) = top.parent() {
        top = parent;
    }
    let bus = top.downcast::<gst::Pipeline>().ok().and_then(|p| p.bus());
    let mut samples = Vec::new();
    let mut last = std::time::Instant::now();
    loop {
        if let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) {
            samples.push(s);
            last = std::time::Instant::now();
            continue;
        }
        if sink.is_eos() {
            break;
        }
        assert!(
            last.elapsed() < STALL,
            "no sample for {STALL:?} after {} samples, and no EOS",
            samples.len()
        );
        if let Some(msg) = bus
            .as_ref()
            .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]))
            && let gst::MessageView::Error(e) = msg.view()
        {
            panic!("the pipeline failed: {} ({:?})", e.error(), e.debug());
        }
    }
    samples
}

/// Runs `desc`, whose sink is `appsink name=sink`, for its first sample:
/// the frame's plane (rows packed) and its video info.
pub fn first_frame(desc: &str) -> (Vec<u8>, gst_video::VideoInfo) {
    let pipeline = parse_pipeline(desc);
    let sink = sink_of(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    let sample = sink
        .pull_sample()
        .unwrap_or_else(|_| panic!("{desc}: no frame"));
    pipeline.set_state(gst::State::Null).unwrap();
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    (packed_plane(&sample.buffer_owned().unwrap(), &info), info)
}

/// The four PNG photos: the same pixels reach rembg (Pillow) and the element
/// (pngdec). rocket.jpg is left out: jpegdec + videoconvert and Pillow decode
/// it to different pixels (mean 2.8 levels apart), which says nothing of us.
pub const PHOTOS: [&str; 4] = ["astronaut", "chelsea", "coffee", "motorcycle_left"];

fn decode_gray_png(path: &Path) -> (Vec<u8>, u32, u32) {
    let (plane, info) = first_frame(&format!(
        "filesrc location={} ! pngdec ! videoconvert ! video/x-raw,format=GRAY8 ! appsink name=sink",
        path.display()
    ));
    (plane, info.width(), info.height())
}

/// The element's masks of [`PHOTOS`] (`u2netmatte mode=mask batch-size=4`
/// and `properties`, as on a launch line) against rembg's in
/// tests/data/rembg-u2netp: (photo, MAE in % of full scale, IoU at 0.5).
pub fn masks_against_rembg(properties: &str) -> Vec<(&'static str, f64, f64)> {
    init();
    // The photos as one stream of mixed sizes, so they share a batch.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = temp_dir(&format!("parity{run}"));
    for (i, name) in PHOTOS.iter().enumerate() {
        std::fs::copy(
            photo(&format!("{name}.png")),
            dir.join(format!("{i:04}.png")),
        )
        .unwrap();
    }
    let pipeline = parse_pipeline(&format!(
        "multifilesrc location={}/%04d.png caps=image/png stop-index={} ! pngdec ! videoconvert ! \
         u2netmatte mode=mask batch-size=4 {properties} ! appsink name=sink sync=false",
        dir.display(),
        PHOTOS.len() - 1
    ));
    let sink = sink_of(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    let samples = collect_samples(&sink);
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(
        samples.len(),
        PHOTOS.len(),
        "{properties}: one mask a photo"
    );

    let mut comparisons = Vec::new();
    for (name, sample) in PHOTOS.iter().zip(samples) {
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        let ours = packed_plane(&sample.buffer_owned().unwrap(), &info);
        let reference = Path::new(TOP).join(format!("tests/data/rembg-u2netp/{name}.png"));
        let (theirs, w, h) = decode_gray_png(&reference);
        assert_eq!((info.width(), info.height()), (w, h), "{name}: size");
        let mae = mae_percent(&ours, &theirs);
        let iou = iou(&threshold(&ours), &threshold(&theirs));
        println!("{properties} {name} {w}x{h}: MAE {mae:.3}% of full scale, IoU {iou:.4}");
        comparisons.push((*name, mae, iou));
    }
    std::fs::remove_dir_all(dir).unwrap();
    comparisons
}

/// The pipeline's `appsink name=sink`.
pub fn sink_of(pipeline: &gst::Pipeline) -> gst_app::AppSink {
    pipeline
        .by_name("sink")
        .expect("the pipeline has an appsink named sink")
        .downcast::<gst_app::AppSink>()
        .unwrap()
}

pub fn parse_pipeline(desc: &str) -> gst::Pipeline {
    init();
    gst::parse::launch(desc)
        .unwrap_or_else(|e| panic!("{desc}: {e}"))
        .downcast::<gst::Pipeline>()
        .unwrap()
}

use gst::glib;

/// A tensor declaration with fixed dims, 0 meaning a symbolic batch.
pub fn value_info(name: &'static str, dims: &[i64]) -> onnx_rs::ast::ValueInfo<'static> {
    use onnx_rs::ast::*;
    ValueInfo {
        name,
        r#type: Some(TypeProto {
            value: Some(TypeValue::Tensor(TensorTypeProto {
                elem_type: DataType::Float,
                shape: Some(TensorShape {
                    dim: dims
                        .iter()
                        .map(|&v| TensorShapeDimension {
                            value: if v == 0 {
                                Dimension::Param("batch")
                            } else {
                                Dimension::Value(v)
                            },
                            denotation: "",
                        })
                        .collect(),
                }),
            })),
            denotation: "",
        }),
        ..Default::default()
    }
}

/// Writes a tiny model shaped like U2Net when `channels` is 3: the mean of
/// the input's channels, `input` (NxCxSxS) -> Nx1xSxS. Dims of 0 are
/// symbolic. Its mask is a (min-max normalised) brightness map: cheap, and
/// predictable.
pub fn write_tiny_model(path: &Path, input: &[i64], extra_input: bool) {
    use onnx_rs::ast::*;
    let output = [input[0], 1, input[2], input[3]];
    let mut inputs = vec![value_info("x", input)];
    if extra_input {
        inputs.push(value_info("z", input));
    }
    let model = Model {
        ir_version: 8,
        opset_import: vec![OperatorSetId {
            domain: "",
            version: 13,
        }],
        graph: Some(Graph {
            name: "tiny",
            node: vec![Node {
                input: vec!["x"],
                output: vec!["y"],
                name: "mean",
                op_type: OpType::ReduceMean,
                attribute: vec![
                    Attribute {
                        name: "axes",
                        r#type: AttributeType::Ints,
                        ints: vec![1],
                        ..Default::default()
                    },
                    Attribute {
                        name: "keepdims",
                        r#type: AttributeType::Int,
                        i: 1,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            input: inputs,
            output: vec![value_info("y", &output)],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(path, onnx_rs::encode(&model)).unwrap();
}

/// Writes a model shaped like U2Net (Nx3x64x64 -> Nx1x64x64) that takes
/// input channel `channel`: with a channel beyond 2 it loads, and every run
/// fails (Gather's index is out of range), as a broken model would.
pub fn write_channel_model(path: &Path, channel: i64) {
    use onnx_rs::ast::*;
    let model = Model {
        ir_version: 8,
        opset_import: vec![OperatorSetId {
            domain: "",
            version: 13,
        }],
        graph: Some(Graph {
            name: "channel",
            node: vec![
                Node {
                    output: vec!["index"],
                    name: "index",
                    op_type: OpType::Constant,
                    attribute: vec![Attribute {
                        name: "value_ints",
                        r#type: AttributeType::Ints,
                        ints: vec![channel],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                Node {
                    input: vec!["x", "index"],
                    output: vec!["y"],
                    name: "gather",
                    op_type: OpType::Gather,
                    attribute: vec![Attribute {
                        name: "axis",
                        r#type: AttributeType::Int,
                        i: 1,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            input: vec![value_info("x", &[0, 3, 64, 64])],
            output: vec![value_info("y", &[0, 1, 64, 64])],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(path, onnx_rs::encode(&model)).unwrap();
}

/// What passed a pad, in order: `F<pts in ms>` for buffers, the event type
/// for events, `Caps <format> <w>x<h>` for caps.
pub type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

pub fn record(pad: &gst::Pad) -> Log {
    let log = Log::default();
    let sink = log.clone();
    pad.add_probe(
        gst::PadProbeType::BUFFER
            | gst::PadProbeType::EVENT_DOWNSTREAM
            | gst::PadProbeType::EVENT_FLUSH,
        move |_, info| {
            let entry = match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => {
                    format!("F{}", b.pts().map_or(u64::MAX, |t| t.mseconds()))
                }
                Some(gst::PadProbeData::Event(e)) => match e.view() {
                    gst::EventView::Caps(c) => {
                        let i = gst_video::VideoInfo::from_caps(c.caps()).unwrap();
                        format!("Caps {} {}x{}", i.format().to_str(), i.width(), i.height())
                    }
                    _ => format!("{:?}", e.type_()),
                },
                _ => return gst::PadProbeReturn::Ok,
            };
            sink.lock().unwrap().push(entry);
            gst::PadProbeReturn::Ok
        },
    );
    log
}

pub fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// Where U2NetP runs with provider=auto on this machine: "CPU", or "CUDA
/// (device 0)" where ONNX Runtime's CUDA build and a GPU are there.
pub fn loaded_provider() -> String {
    use gstu2netmatte::model::{Model, ModelOptions};
    let runtime = gstu2netmatte::runtime::load(None, None, ort::logging::LogLevel::Warning)
        .expect("ONNX Runtime loads")
        .runtime;
    let path = Path::new(TOP).join("models/u2netp.onnx");
    Model::load(&runtime, &path, &ModelOptions::default())
        .expect("U2NetP loads")
        .provider()
        .to_string()
}

/// Runs the ignored test `child` of this test binary alone in a process of
/// its own, with `env=value`, and returns the peak RSS (KiB) it printed as
/// `peak-rss-kib=` (see [`print_peak_rss`]): the process's peak is then the
/// child's alone.
pub fn child_peak_rss_kib(child: &str, env: &str, value: &str) -> u64 {
    let text = child_value(child, &[(env, value)], "peak-rss-kib");
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("peak-rss-kib={text}"))
}

/// Runs the ignored test `child` of this test binary alone in a process of
/// its own, with `env`, and returns what it printed after `key=`.
pub fn child_value(child: &str, env: &[(&str, &str)], key: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--ignored", "--nocapture"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child {child} with {env:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prefix = format!("{key}=");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key}= line in:\n{stdout}"))
        .to_string()
}

/// In a child of [`child_peak_rss_kib`]: prints this process's peak RSS.
pub fn print_peak_rss() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .expect("VmHWM in /proc/self/status")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .to_string();
    println!("peak-rss-kib={hwm}");
}

/// A model whose run fails on bright frames only: the mean of its input
/// (ImageNet-normalised, so negative for a dark frame), times 4, picks the
/// input channel, which is out of range above 2.
pub fn write_bright_fails_model(path: &Path) {
    use onnx_rs::ast::*;
    fn node(
        op_type: OpType<'static>,
        input: Vec<&'static str>,
        output: &'static str,
        attribute: Vec<Attribute<'static>>,
    ) -> Node<'static> {
        Node {
            input,
            output: vec![output],
            name: output,
            op_type,
            attribute,
            ..Default::default()
        }
    }
    let int = |name: &'static str, i: i64| Attribute {
        name,
        r#type: AttributeType::Int,
        i,
        ..Default::default()
    };
    let model = Model {
        ir_version: 8,
        opset_import: vec![OperatorSetId {
            domain: "",
            version: 13,
        }],
        graph: Some(Graph {
            name: "bright-fails",
            node: vec![
                node(
                    OpType::ReduceMean,
                    vec!["x"],
                    "mean",
                    vec![int("keepdims", 0)],
                ),
                node(OpType::Relu, vec!["mean"], "positive", vec![]),
                node(
                    OpType::Constant,
                    vec![],
                    "four",
                    vec![Attribute {
                        name: "value_float",
                        r#type: AttributeType::Float,
                        f: 4.0,
                        ..Default::default()
                    }],
                ),
                node(OpType::Mul, vec!["positive", "four"], "scaled", vec![]),
                // 7: INT64.
                node(OpType::Cast, vec!["scaled"], "channel", vec![int("to", 7)]),
                node(
                    OpType::Constant,
                    vec![],
                    "axis0",
                    vec![Attribute {
                        name: "value_ints",
                        r#type: AttributeType::Ints,
                        ints: vec![0],
                        ..Default::default()
                    }],
                ),
                node(OpType::Unsqueeze, vec!["channel", "axis0"], "index", vec![]),
                node(
                    OpType::Gather,
                    vec!["x", "index"],
                    "y",
                    vec![int("axis", 1)],
                ),
            ],
            input: vec![value_info("x", &[0, 3, 64, 64])],
            output: vec![value_info("y", &[0, 1, 64, 64])],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(path, onnx_rs::encode(&model)).unwrap();
}
