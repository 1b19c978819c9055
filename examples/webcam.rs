// SPDX-License-Identifier: MPL-2.0
//! Live background replacement: a webcam (or, without one, a live test
//! source) cut out by u2netmatte and composited over another picture.
//!
//!     cargo run --release --example webcam -- [--device /dev/video0] [--frames N] [--headless]
//!
//! The pipeline it runs (printed at start):
//!
//!   v4l2src ! videoconvert ! videoscale ! video/x-raw,width=640,height=480 !
//!     u2netmatte batch-size=1 mode=alpha ! compositor (over the background) !
//!     videoconvert ! autovideosink
//!
//! U2NetP takes 0.1-0.5 s a frame on a CPU: the source is asked for what the
//! element keeps up with (--fps, default 2); on a GPU ask for 30.

use std::error::Error;
use std::path::Path;

use gst::prelude::*;

struct Options {
    device: String,
    frames: u32,
    headless: bool,
    fps: u32,
}

fn options() -> Result<Options, Box<dyn Error>> {
    let mut o = Options {
        device: "/dev/video0".into(),
        frames: 0,
        headless: false,
        fps: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--device" => o.device = args.next().ok_or("--device needs a path")?,
            "--frames" => o.frames = args.next().ok_or("--frames needs a count")?.parse()?,
            "--fps" => o.fps = args.next().ok_or("--fps needs a rate")?.parse()?,
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
    let description = format!(
        "compositor name=mix background=black ! videoconvert ! {sink} \
         videotestsrc is-live=true pattern=smpte ! video/x-raw,width=640,height=480,framerate={fps}/1 ! mix.sink_0 \
         {camera} ! videoconvert ! videoscale ! videorate ! video/x-raw,width=640,height=480,framerate={fps}/1 ! \
         u2netmatte batch-size=1 mode=alpha ! mix.sink_1"
    );
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
            // The element raised its latency after a slow batch.
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
