// SPDX-License-Identifier: MPL-2.0
//! The work: decoders -> appsrc ! u2netmatte ! appsink -> encoders.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Instant;

use gst::prelude::*;
use gst_video::prelude::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::codec::{self, OutputPicture};
use crate::inputs::{self, Job};
use crate::{Args, Mode, Provider};

pub struct Summary {
    pub total: usize,
    pub written: usize,
    pub failed: Vec<(PathBuf, String)>,
    pub seconds: f64,
}

fn nick(mode: Mode) -> &'static str {
    match mode {
        Mode::Alpha => "alpha",
        Mode::Composite => "composite",
        Mode::Mask => "mask",
    }
}

fn provider_nick(p: Provider) -> &'static str {
    match p {
        Provider::Auto => "auto",
        Provider::Cuda => "cuda",
        Provider::Cpu => "cpu",
    }
}

struct Pipeline {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    sink: gst_app::AppSink,
}

fn build(args: &Args, queue: u64) -> Result<Pipeline, String> {
    gst::init().map_err(|e| e.to_string())?;
    gstu2netmatte::plugin_register_static().map_err(|e| e.to_string())?;
    let src = gst_app::AppSrc::builder()
        .format(gst::Format::Time)
        .block(true)
        .max_buffers(queue)
        .max_bytes(0)
        .build();
    let matte = gst::ElementFactory::make("u2netmatte")
        .property("model", &args.model)
        .property("batch-size", args.batch_size)
        .property("threshold", args.threshold)
        .property("fill-color", args.fill_color)
        .property("device-id", args.device_id)
        .property_from_str("mode", nick(args.mode))
        .property_from_str("provider", provider_nick(args.provider))
        .build()
        .map_err(|e| format!("the u2netmatte element: {e}"))?;
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(queue as u32)
        .build();
    let pipeline = gst::Pipeline::new();
    pipeline
        .add_many([src.upcast_ref(), &matte, sink.upcast_ref()])
        .map_err(|e| e.to_string())?;
    gst::Element::link_many([src.upcast_ref(), &matte, sink.upcast_ref()])
        .map_err(|e| e.to_string())?;
    Ok(Pipeline {
        pipeline,
        src,
        sink,
    })
}

/// The first error on the bus, as text.
fn bus_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(e) = msg.view() {
            return Some(e.error().to_string());
        }
    }
    None
}

fn progress(total: usize, quiet: bool) -> ProgressBar {
    let target = if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(total as u64), target);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} files  {per_sec}  ETA {eta}  {wide_msg}")
    {
        bar.set_style(style);
    }
    bar
}

fn sample_for(pic: codec::Picture, index: usize) -> Result<gst::Sample, String> {
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgba, pic.width, pic.height)
        .build()
        .map_err(|e| e.to_string())?;
    let caps = info.to_caps().map_err(|e| e.to_string())?;
    let mut buffer = gst::Buffer::from_mut_slice(pic.rgba);
    {
        let b = buffer.get_mut().ok_or("buffer not writable")?;
        // The offset names the file: the element keeps it on the output.
        b.set_offset(index as u64);
        b.set_pts(gst::ClockTime::from_mseconds(index as u64));
    }
    Ok(gst::Sample::builder().buffer(&buffer).caps(&caps).build())
}

fn write_sample(sample: &gst::Sample, args: &Args, job: &Job) -> Result<(), String> {
    let caps = sample.caps().ok_or("output without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| e.to_string())?;
    let buffer = sample.buffer().ok_or("output without buffer")?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|e| e.to_string())?;
    let pic = OutputPicture {
        width: info.width(),
        height: info.height(),
        channels: info.format_info().pixel_stride()[0] as usize,
        data: frame.plane_data(0).map_err(|e| e.to_string())?,
        stride: frame.plane_stride()[0] as usize,
    };
    codec::write(&pic, args.format, &job.output)
}

pub fn run(args: &Args) -> Result<Summary, String> {
    std::fs::create_dir_all(&args.output)
        .map_err(|e| format!("cannot create {}: {e}", args.output.display()))?;
    let jobs = inputs::collect(&args.inputs, &args.output, args.format.extension())
        .map_err(|e| e.to_string())?;
    if jobs.is_empty() {
        return Err("no images among the inputs".into());
    }
    let threads = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let p = build(args, u64::from(args.batch_size) * 2)?;
    if p.pipeline.set_state(gst::State::Playing).is_err() {
        let e = bus_error(&p.pipeline).unwrap_or_else(|| "the pipeline did not start".into());
        let _ = p.pipeline.set_state(gst::State::Null);
        return Err(e);
    }

    let bar = progress(jobs.len(), args.quiet);
    let started = Instant::now();
    let failed = Mutex::new(Vec::new());
    let written = AtomicUsize::new(0);
    let next = AtomicUsize::new(0);
    let decoders_left = AtomicUsize::new(threads);
    let push_turn = Mutex::new(());
    let fail = |job: &Job, reason: String| {
        bar.println(format!("skipped {}: {reason}", job.input.display()));
        failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((job.input.clone(), reason));
        bar.inc(1);
    };

    let (tx, rx) = mpsc::sync_channel::<gst::Sample>(threads * 2);
    let rx = Mutex::new(rx);
    let error = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = jobs.get(i) else { break };
                    match codec::decode(&job.input).and_then(|pic| sample_for(pic, i)) {
                        Ok(sample) => {
                            // push_sample sets the caps, then queues the
                            // buffer: two decoders interleaving there would
                            // send a frame under another's caps.
                            let _turn = push_turn.lock().unwrap_or_else(|e| e.into_inner());
                            if p.src.push_sample(&sample).is_err() {
                                break;
                            }
                        }
                        Err(e) => fail(job, format!("cannot read it: {e}")),
                    }
                }
                if decoders_left.fetch_sub(1, Ordering::SeqCst) == 1 {
                    let _ = p.src.end_of_stream();
                }
            });
        }

        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let Ok(sample) = rx.lock().unwrap_or_else(|e| e.into_inner()).recv() else {
                        break;
                    };
                    let Some(job) = sample.buffer().and_then(|b| jobs.get(b.offset() as usize))
                    else {
                        continue;
                    };
                    match write_sample(&sample, args, job) {
                        Ok(()) => {
                            written.fetch_add(1, Ordering::SeqCst);
                            bar.inc(1);
                        }
                        Err(e) => fail(job, format!("cannot write {}: {e}", job.output.display())),
                    }
                }
            });
        }

        while let Ok(sample) = p.sink.pull_sample() {
            if tx.send(sample).is_err() {
                break;
            }
        }
        drop(tx);
        // An error ends the stream early, and appsrc then sends EOS itself:
        // decoders may still wait in push. Read the error before stopping
        // (a pipeline going to NULL drops its bus messages), then stop,
        // which makes every push return at once.
        let error = bus_error(&p.pipeline);
        let _ = p.pipeline.set_state(gst::State::Null);
        error
    });
    bar.finish_and_clear();
    if let Some(e) = error {
        return Err(e);
    }
    Ok(Summary {
        total: jobs.len(),
        written: written.load(Ordering::SeqCst),
        failed: failed.into_inner().unwrap_or_else(|e| e.into_inner()),
        seconds: started.elapsed().as_secs_f64(),
    })
}
