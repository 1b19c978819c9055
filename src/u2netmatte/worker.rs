// SPDX-License-Identifier: MPL-2.0
//! One batch in, its output buffers out: assembles the batch tensor, runs the
//! model once, and composes the output frames in parallel across frames.

use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_video::prelude::*;
use rayon::prelude::*;

use super::queue::Frame;
use crate::matte::{Composite, Matter, Mode, OutFrame};
use crate::model::{Model, ModelError};

/// How long the parts of one batch took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub inference: Duration,
    pub compose: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("could not get an output buffer: {0}")]
    Allocate(String),
    #[error("frame {index} of the batch: {reason}")]
    Frame { index: usize, reason: String },
}

/// Output buffer pools kept at once: frames of a few sizes may alternate.
const MAX_POOLS: usize = 4;

pub struct BatchRunner {
    model: Model,
    batch_input: Vec<f32>,
    masks: Vec<u8>,
    matters: Vec<Matter>,
    pools: Vec<(gst_video::VideoInfo, gst::BufferPool)>,
}

impl Drop for BatchRunner {
    fn drop(&mut self) {
        for (_, pool) in self.pools.drain(..) {
            let _ = pool.set_active(false);
        }
    }
}

impl BatchRunner {
    pub fn new(model: Model) -> Self {
        Self {
            model,
            batch_input: Vec::new(),
            masks: Vec::new(),
            matters: Vec::new(),
            pools: Vec::new(),
        }
    }

    /// Runs one batch of blank frames: proves the model runs at this batch
    /// size, lets ONNX Runtime set up its buffers, and times a batch.
    pub fn warm_up(&mut self, batch: usize) -> Result<Duration, ModelError> {
        self.batch_input.clear();
        self.batch_input.resize(batch * self.model.frame_len(), 0.0);
        let start = Instant::now();
        self.model.run(&self.batch_input, batch, &mut self.masks)?;
        Ok(start.elapsed())
    }

    /// Runs `frames` as one batch and returns their output buffers, with the
    /// input's timestamps and flags, in the same order.
    pub fn run(
        &mut self,
        frames: &[&Frame],
        mode: Mode,
        composite: Composite,
    ) -> Result<(Vec<gst::Buffer>, Timings), BatchError> {
        let start = Instant::now();
        self.batch_input.clear();
        for frame in frames {
            self.batch_input.extend_from_slice(&frame.tensor);
        }
        let mask_size = self
            .model
            .run(&self.batch_input, frames.len(), &mut self.masks)?;
        let inference = start.elapsed();

        let start = Instant::now();
        let mut outputs = frames
            .iter()
            .map(|f| self.output_buffer(&f.out_info))
            .collect::<Result<Vec<_>, _>>()?;
        if self.matters.len() < frames.len() {
            self.matters.resize_with(frames.len(), Matter::new);
        }
        let plane = mask_size.0 as usize * mask_size.1 as usize;
        let mut jobs: Vec<Job> = frames
            .iter()
            .zip(outputs.iter_mut())
            .zip(self.masks.chunks_exact(plane))
            .zip(self.matters.iter_mut())
            .enumerate()
            .map(|(index, (((frame, out), mask), matter))| Job {
                index,
                frame,
                out,
                mask,
                matter,
            })
            .collect();
        let (mask_h, mask_w) = mask_size;
        let small = (mask_w, mask_h);
        // Frames in parallel; each frame's resizes and rows in parallel too
        // (rayon shares the cores between the two levels).
        jobs.par_iter_mut()
            .try_for_each(|job| job.render(mode, small, composite))?;
        let compose = start.elapsed();
        Ok((outputs, Timings { inference, compose }))
    }

    fn output_buffer(&mut self, info: &gst_video::VideoInfo) -> Result<gst::Buffer, BatchError> {
        let pool = match self.pools.iter().position(|(i, _)| i == info) {
            Some(i) => self.pools[i].1.clone(),
            None => {
                let pool = new_pool(info).map_err(|e| BatchError::Allocate(e.to_string()))?;
                if self.pools.len() == MAX_POOLS {
                    let (_, old) = self.pools.remove(0);
                    let _ = old.set_active(false);
                }
                self.pools.push((info.clone(), pool.clone()));
                pool
            }
        };
        pool.acquire_buffer(None)
            .map_err(|e| BatchError::Allocate(format!("buffer pool: {e:?}")))
    }
}

fn new_pool(info: &gst_video::VideoInfo) -> Result<gst::BufferPool, gst::glib::BoolError> {
    let pool = gst_video::VideoBufferPool::new();
    let caps = info.to_caps()?;
    let mut config = pool.config();
    config.set_params(Some(&caps), info.size() as u32, 0, 0);
    pool.set_config(config)?;
    pool.set_active(true)?;
    Ok(pool.upcast())
}

struct Job<'a> {
    index: usize,
    frame: &'a Frame,
    out: &'a mut gst::Buffer,
    mask: &'a [u8],
    matter: &'a mut Matter,
}

impl Job<'_> {
    fn render(
        &mut self,
        mode: Mode,
        small: (u32, u32),
        composite: Composite,
    ) -> Result<(), BatchError> {
        let fail = |reason: String| BatchError::Frame {
            index: self.index,
            reason,
        };
        let frame = self.frame;
        let out = self.out.make_mut();
        frame
            .buffer
            .copy_into(
                out,
                gst::BufferCopyFlags::FLAGS | gst::BufferCopyFlags::TIMESTAMPS,
                ..,
            )
            .map_err(|e| fail(e.to_string()))?;

        let input_map = if mode == Mode::Mask {
            None
        } else {
            Some(
                gst_video::VideoFrameRef::from_buffer_ref_readable(
                    frame.buffer.as_ref(),
                    &frame.in_info,
                )
                .map_err(|e| fail(format!("cannot read input frame: {e}")))?,
            )
        };
        let layout = super::caps::layout_of(frame.in_info.format()).ok_or_else(|| {
            fail(format!(
                "unsupported input format {:?}",
                frame.in_info.format()
            ))
        })?;
        let input = match &input_map {
            Some(map) => Some(crate::prep::Frame {
                data: map.plane_data(0).map_err(|e| fail(e.to_string()))?,
                width: map.width(),
                height: map.height(),
                stride: map.plane_stride()[0] as usize,
                layout,
            }),
            None => None,
        };

        let mut out_map = gst_video::VideoFrameRef::from_buffer_ref_writable(out, &frame.out_info)
            .map_err(|e| fail(format!("cannot write output frame: {e}")))?;
        let (width, height) = (out_map.width(), out_map.height());
        let stride = out_map.plane_stride()[0] as usize;
        let data = out_map.plane_data_mut(0).map_err(|e| fail(e.to_string()))?;
        self.matter
            .render(
                mode,
                self.mask,
                small,
                input.as_ref(),
                OutFrame {
                    data,
                    width,
                    height,
                    stride,
                },
                composite,
            )
            .map_err(|e| fail(e.to_string()))
    }
}
