// SPDX-License-Identifier: MPL-2.0
//! Live background blur or replacement: a webcam (or, without one, a live
//! test source) at 640x480 and 30 fps through u2netmatte.
//!
//!     cargo run --release --example webcam -- [--device /dev/video0] [--effect blur|replace]
//!         [--smoothing 0.5] [--inference-size 0] [--fps 30] [--frames N] [--headless]
//!
//! The pipelines it runs (printed at start):
//!
//!   blur:    v4l2src ! videoconvert ! videoscale ! videorate ! video/x-raw,width=640,height=480,framerate=30/1 !
//!              u2netmatte mode=blur temporal-smoothing=0.5 ! videoconvert ! autovideosink
//!   replace: ... ! u2netmatte mode=alpha temporal-smoothing=0.5 ! compositor (over a background) ! ...
//!
//! The element keeps up with the camera by default (`keep-up`): every frame
//! leaves at the camera's rate, with the newest mask the model has made,
//! however slow the model is on this machine; `temporal-smoothing` steadies
//! the masks where the picture does not move.

use std::error::Error;
use std::path::Path;

use gst::prelude::*;

struct Options {
    device: String,
    frames: u32,
    headless: bool,
    fps: u32,
    /// Blur the background, or replace it.
    replace: bool,
    smoothing: f64,
    inference_size: u32,
}

fn options() -> Result<Options, Box<dyn Error>> {
    let mut o = Options {
        device: "/dev/video0".into(),
        frames: 0,
        headless: false,
        fps: 30,
        replace: false,
        smoothing: 0.5,
        inference_size: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--device" => o.device = args.next().ok_or("--device needs a path")?,
            "--frames" => o.frames = args.next().ok_or("--frames needs a count")?.parse()?,
            "--fps" => o.fps = args.next().ok_or("--fps needs a rate")?.parse()?,
            "--effect" => {
                o.replace = match args.next().as_deref() {
                    Some("blur") => false,
                    Some("replace") => true,
                    _ => return Err("--effect is blur or replace".into()),
                }
            }
            "--smoothing" => o.smoothing = args.next().ok_or("--smoothing needs 0..1")?.parse()?,
            "--inference-size" => {
                o.inference_size = args
                    .next()
                    .ok_or("--inference-size needs a size")?
                    .parse()?
            }
            "--headless" => o.headless = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(o)
}

fn main() -> Result<(), Box<dyn Error>> {
    let o = options()?;
    gst::init()?;
    gstu2netmatte::plugin_register_static()?;

    let frames = if o.frames > 0 {
        format!("num-buffers={}", o.frames)
    } else {
        String::new()
    };
    let camera = if Path::new(&o.device).exists() {
        format!("v4l2src device={} {frames}", o.device)
    } else {
        eprintln!(
            "no camera at {}: using a live test source instead",
            o.device
        );
        format!("videotestsrc is-live=true pattern=ball {frames}")
    };
    let sink = if o.headless {
        "fakesink sync=true"
    } else {
        "autovideosink"
    };
    let fps = o.fps;
    let input = format!(
        "{camera} ! videoconvert ! videoscale ! videorate ! video/x-raw,width=640,height=480,framerate={fps}/1"
    );
    let matte = format!(
        "u2netmatte temporal-smoothing={} inference-size={}",
        o.smoothing, o.inference_size
    );
    let description = if o.replace {
        // The cut-out over another live picture, the GStreamer way.
        format!(
            "compositor name=mix background=black ! videoconvert ! {sink} \
             videotestsrc is-live=true pattern=smpte ! video/x-raw,width=640,height=480,framerate={fps}/1 ! mix.sink_0 \
             {input} ! {matte} mode=alpha ! mix.sink_1"
        )
    } else {
        format!("{input} ! {matte} mode=blur ! videoconvert ! {sink}")
    };
    println!("gst-launch-1.0 {description}");
    let pipeline = gst::parse::launch(&description)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline")?;

    // Count the frames the element delivers.
    let matte = pipeline
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "u2netmatte"))
        .ok_or("no u2netmatte in the pipeline")?;
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = delivered.clone();
    matte.static_pad("src").ok_or("no src pad")?.add_probe(
        gst::PadProbeType::BUFFER,
        move |_, _| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            gst::PadProbeReturn::Ok
        },
    );

    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().ok_or("no bus")?;
    let mut result = Ok(());
    loop {
        // The background never ends: with --frames, stop once the element
        // has delivered them.
        if o.frames > 0 && delivered.load(std::sync::atomic::Ordering::SeqCst) >= o.frames {
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
            // The element's latency changed (caps, a slow run).
            gst::MessageView::Latency(_) => {
                let _ = pipeline.recalculate_latency();
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null)?;
    println!(
        "{} frames cut out",
        delivered.load(std::sync::atomic::Ordering::SeqCst)
    );
    result
}
