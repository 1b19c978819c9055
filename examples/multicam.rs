// SPDX-License-Identifier: MPL-2.0
//! Four cameras, one model: four live sources through four u2netmatte
//! elements that share one model session (`shared-session`), into a 2x2
//! `compositor` grid.
//!
//!     cargo run --release --example multicam -- [--device /dev/video0 ...] [--effect blur|alpha]
//!         [--size 320x240] [--fps 30] [--frames N] [--headless]
//!
//! Each `--device` that exists is a camera; the other places in the grid
//! get live test sources. The four elements batch their frames together on
//! one inference thread (one ONNX Runtime session and arena in memory);
//! each stream keeps its own timestamps, events, latency and EOS.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use gst::prelude::*;

const STREAMS: usize = 4;
const PATTERNS: [&str; STREAMS] = ["ball", "smpte", "pinwheel", "snow"];

struct Options {
    devices: Vec<String>,
    effect: String,
    width: u32,
    height: u32,
    fps: u32,
    frames: u32,
    headless: bool,
}

fn options() -> Result<Options, Box<dyn Error>> {
    let mut o = Options {
        devices: Vec::new(),
        effect: "blur".into(),
        width: 320,
        height: 240,
        fps: 30,
        frames: 0,
        headless: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--device" => o.devices.push(args.next().ok_or("--device needs a path")?),
            "--effect" => {
                o.effect = match args.next().as_deref() {
                    Some(e @ ("blur" | "alpha")) => e.to_string(),
                    _ => return Err("--effect is blur or alpha".into()),
                }
            }
            "--size" => {
                let size = args.next().ok_or("--size needs WxH")?;
                let (w, h) = size.split_once('x').ok_or("--size is WxH")?;
                (o.width, o.height) = (w.parse()?, h.parse()?);
            }
            "--fps" => o.fps = args.next().ok_or("--fps needs a rate")?.parse()?,
            "--frames" => o.frames = args.next().ok_or("--frames needs a count")?.parse()?,
            "--headless" => o.headless = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if o.devices.len() > STREAMS {
        return Err(format!("at most {STREAMS} devices").into());
    }
    Ok(o)
}

fn description(o: &Options) -> String {
    let (w, h, fps) = (o.width, o.height, o.fps);
    let sink = if o.headless {
        "fakesink sync=true"
    } else {
        "autovideosink"
    };
    let mut d = format!("compositor name=grid background=black ! videoconvert ! {sink}");
    for (n, pattern) in PATTERNS.iter().enumerate() {
        let source = match o.devices.get(n) {
            Some(dev) if Path::new(dev).exists() => format!("v4l2src device={dev}"),
            other => {
                if let Some(dev) = other {
                    eprintln!("no camera at {dev}: a live test source takes its place");
                }
                format!("videotestsrc is-live=true pattern={pattern}")
            }
        };
        d += &format!(
            "  {source} ! videoconvert ! videoscale ! videorate ! \
             video/x-raw,width={w},height={h},framerate={fps}/1 ! \
             u2netmatte name=matte{n} shared-session=cameras batch-size={STREAMS} mode={} ! \
             grid.sink_{n}",
            o.effect
        );
    }
    d
}

fn main() -> Result<(), Box<dyn Error>> {
    let o = options()?;
    gst::init()?;
    gstu2netmatte::plugin_register_static()?;

    let description = description(&o);
    println!("gst-launch-1.0 {description}");
    let pipeline = gst::parse::launch(&description)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline")?;
    // Each stream's place in the 2x2 grid.
    let grid = pipeline.by_name("grid").ok_or("no compositor")?;
    for n in 0..STREAMS {
        let pad = grid
            .static_pad(&format!("sink_{n}"))
            .ok_or("no compositor pad")?;
        pad.set_property("xpos", (n as u32 % 2 * o.width) as i32);
        pad.set_property("ypos", (n as u32 / 2 * o.height) as i32);
    }

    // Frames each element delivers.
    let counts: Vec<Arc<AtomicU32>> = (0..STREAMS).map(|_| Arc::default()).collect();
    for (n, count) in counts.iter().enumerate() {
        let matte = pipeline
            .by_name(&format!("matte{n}"))
            .ok_or("no u2netmatte")?;
        let count = count.clone();
        matte.static_pad("src").ok_or("no src pad")?.add_probe(
            gst::PadProbeType::BUFFER,
            move |_, _| {
                count.fetch_add(1, Ordering::SeqCst);
                gst::PadProbeReturn::Ok
            },
        );
    }

    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().ok_or("no bus")?;
    let mut result = Ok(());
    loop {
        if o.frames > 0 && counts.iter().all(|c| c.load(Ordering::SeqCst) >= o.frames) {
            break;
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                result = Err(format!("{} ({:?})", e.error(), e.debug()).into());
                break;
            }
            gst::MessageView::Latency(_) => {
                let _ = pipeline.recalculate_latency();
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    let counts: Vec<String> = counts
        .iter()
        .map(|c| c.load(Ordering::SeqCst).to_string())
        .collect();
    println!("frames cut out per stream: {}", counts.join(" "));
    result
}
