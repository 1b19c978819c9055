// SPDX-License-Identifier: MPL-2.0
//! Embedding u2netmatte in an application: frames in and out as plain byte
//! slices, through `appsrc ! u2netmatte ! appsink`.
//!
//!     cargo run --example embed
//!
//! `Matte::cut_out` takes packed RGBA frames of any sizes and returns their
//! cut-outs (RGBA, alpha = the soft mask), in order. The element runs them
//! in batches; the application never sees GStreamer types.

use std::error::Error;

use gst::prelude::*;
use gst_video::prelude::*;

/// A u2netmatte pipeline that turns RGBA frames into cut-outs.
struct Matte {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
}

impl Matte {
    fn new(batch_size: u32) -> Result<Self, Box<dyn Error>> {
        gst::init()?;
        // Statically linked here; an application using the installed plugin
        // would find it by name the same way.
        gstu2netmatte::plugin_register_static()?;
        let src = gst_app::AppSrc::builder().format(gst::Format::Time).build();
        let matte = gst::ElementFactory::make("u2netmatte")
            .property("batch-size", batch_size)
            .property_from_str("mode", "alpha")
            .build()?;
        let sink = gst_app::AppSink::builder().sync(false).build();
        let pipeline = gst::Pipeline::new();
        pipeline.add_many([src.upcast_ref(), &matte, sink.upcast_ref()])?;
        gst::Element::link_many([src.upcast_ref(), &matte, sink.upcast_ref()])?;
        pipeline.set_state(gst::State::Playing)?;
        Ok(Self {
            pipeline,
            src,
            sink,
        })
    }

    /// Cuts out `frames` ((width, height, RGBA bytes)); returns RGBA bytes
    /// per frame, in order.
    fn cut_out(&self, frames: &[(u32, u32, &[u8])]) -> Result<Vec<Vec<u8>>, Box<dyn Error>> {
        for (n, (w, h, rgba)) in frames.iter().enumerate() {
            let info =
                gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgba, *w, *h).build()?;
            if rgba.len() != info.size() {
                return Err(format!(
                    "frame {n}: {} bytes, {w}x{h} RGBA is {}",
                    rgba.len(),
                    info.size()
                )
                .into());
            }
            let mut buffer = gst::Buffer::from_slice(rgba.to_vec());
            buffer
                .get_mut()
                .ok_or("buffer")?
                .set_pts(gst::ClockTime::from_mseconds(n as u64 * 40));
            let sample = gst::Sample::builder()
                .buffer(&buffer)
                .caps(&info.to_caps()?)
                .build();
            self.src.push_sample(&sample)?;
        }
        self.src.end_of_stream()?;
        let mut out = Vec::new();
        while let Ok(sample) = self.sink.pull_sample() {
            let info = gst_video::VideoInfo::from_caps(sample.caps().ok_or("caps")?)?;
            let buffer = sample.buffer().ok_or("buffer")?;
            let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)?;
            let stride = frame.plane_stride()[0] as usize;
            let row = info.width() as usize * 4;
            let data = frame.plane_data(0)?;
            out.push(
                (0..info.height() as usize)
                    .flat_map(|y| data[y * stride..y * stride + row].to_vec())
                    .collect(),
            );
        }
        if let Some(msg) = self
            .pipeline
            .bus()
            .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]))
        {
            return Err(format!("{msg:?}").into());
        }
        Ok(out)
    }
}

impl Drop for Matte {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// A red disc on a blue-grey gradient: something salient to cut out.
fn disc(width: u32, height: u32) -> Vec<u8> {
    let (cx, cy, r) = (
        width as f32 / 2.0,
        height as f32 / 2.0,
        width.min(height) as f32 * 0.3,
    );
    let mut rgba = Vec::with_capacity((width * height * 4) as usize);
    for y in 0..height {
        for x in 0..width {
            let inside = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= r * r;
            let px = if inside {
                [220, 40, 40, 255]
            } else {
                [60, 100 + (60 * y / height) as u8, 150, 255]
            };
            rgba.extend_from_slice(&px);
        }
    }
    rgba
}

fn main() -> Result<(), Box<dyn Error>> {
    let sizes = [(640u32, 480u32), (333, 500), (1280, 720)];
    let inputs: Vec<Vec<u8>> = sizes.iter().map(|&(w, h)| disc(w, h)).collect();
    let frames: Vec<(u32, u32, &[u8])> = sizes
        .iter()
        .zip(&inputs)
        .map(|(&(w, h), d)| (w, h, d.as_slice()))
        .collect();

    let matte = Matte::new(2)?;
    let cut_outs = matte.cut_out(&frames)?;
    for (&(w, h), out) in sizes.iter().zip(&cut_outs) {
        let opaque = out.chunks_exact(4).filter(|px| px[3] > 127).count();
        println!(
            "{w}x{h}: {} bytes out, {:.1}% of pixels kept (the disc covers {:.1}%)",
            out.len(),
            100.0 * opaque as f64 / (w * h) as f64,
            100.0 * std::f64::consts::PI * (0.3 * w.min(h) as f64).powi(2) / (w * h) as f64
        );
    }
    Ok(())
}
