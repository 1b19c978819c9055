// SPDX-License-Identifier: MPL-2.0
//! The inference thread: takes batches as the queue's rules allow, runs them,
//! and hands the finished frames (with the events between them) to the src
//! pad's task. The sink pad prepares the next batch meanwhile.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::imp::{CAT, RunConfig, U2NetMatte, lock, wait};
use super::queue::{Item, Next, Output};
use super::worker::{BatchError, BatchRunner, Timings};
use crate::matte::Composite;
use crate::model::ModelError;

impl U2NetMatte {
    pub(super) fn spawn_inference(
        &self,
        runner: BatchRunner,
        config: RunConfig,
    ) -> std::io::Result<JoinHandle<()>> {
        let imp = self.ref_counted();
        std::thread::Builder::new()
            .name("u2netmatte-inference".into())
            .spawn(move || imp.inference_loop(runner, config))
    }

    fn inference_loop(&self, mut runner: BatchRunner, config: RunConfig) {
        loop {
            let Some((items, epoch)) = self.next_work(config) else {
                return;
            };
            let started = Instant::now();
            let result = self.process(&mut runner, &items, config);
            let result = match result {
                Ok((buffers, Some(timings))) => {
                    self.account_processing(started.elapsed());
                    self.post_stats(&items, timings, config);
                    Ok(buffers)
                }
                Ok((buffers, None)) => Ok(buffers),
                Err(e) => Err(e),
            };

            let mut q = lock(&self.queue);
            q.busy = false;
            let current = q.epoch == epoch && q.srcresult.is_ok();
            match result {
                Ok(mut buffers) if current => {
                    for item in items {
                        match item {
                            Item::Event(e) => q.push_output(Output::Event(e)),
                            Item::Frame(f) => {
                                q.recycle_tensor(f.tensor);
                                if let Some(b) = buffers.next() {
                                    q.push_output(Output::Buffer(b));
                                }
                            }
                        }
                    }
                }
                Err(flow) if current => q.srcresult = Err(flow),
                // Flushed while running: none of it may come out.
                _ => {
                    for item in items {
                        if let Item::Frame(f) = item {
                            q.recycle_tensor(f.tensor);
                        }
                    }
                }
            }
            self.cond.notify_all();
        }
    }

    /// Waits until a batch (or events alone) may go, and takes it; None at
    /// shutdown. Holds back while a batch of finished frames waits to be
    /// pushed, so that memory stays bounded when downstream is slow.
    fn next_work(&self, config: RunConfig) -> Option<(Vec<Item>, u64)> {
        let mut q = lock(&self.queue);
        loop {
            if q.shutdown {
                return None;
            }
            if q.srcresult.is_ok() && q.output_frames() < config.batch_size {
                match q.next(config.batch_size, Instant::now()) {
                    Next::Work(items) => {
                        q.busy = true;
                        let epoch = q.epoch;
                        drop(q);
                        // The sink pad may have room now.
                        self.cond.notify_all();
                        return Some((items, epoch));
                    }
                    Next::WaitUntil(deadline) => {
                        let timeout = deadline.saturating_duration_since(Instant::now());
                        q = self
                            .cond
                            .wait_timeout(q, timeout)
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .0;
                        continue;
                    }
                    Next::Wait => {}
                }
            }
            q = wait(&self.cond, q);
        }
    }

    /// With `stats=true`, tells the application what a batch cost.
    fn post_stats(&self, items: &[Item], timings: Timings, config: RunConfig) {
        if !lock(&self.settings).stats {
            return;
        }
        let (frames, prepare) = items
            .iter()
            .fold((0u32, Duration::ZERO), |(n, t), i| match i {
                Item::Frame(f) => (n + 1, t + f.prepare_time),
                Item::Event(_) => (n, t),
            });
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let s = gst::Structure::builder("u2netmatte-stats")
            .field("frames", frames)
            .field("batch-size", config.batch_size as u32)
            .field("inference-ms", ms(timings.inference))
            .field("prepare-ms", ms(prepare))
            .field("compose-ms", ms(timings.compose))
            .field("provider", config.provider.to_string())
            .build();
        let obj = self.obj();
        let _ = obj.post_message(gst::message::Element::builder(s).src(&*obj).build());
    }

    /// Runs the frames among `items` as one batch; timings if there were any.
    #[allow(clippy::type_complexity)]
    fn process(
        &self,
        runner: &mut BatchRunner,
        items: &[Item],
        config: RunConfig,
    ) -> Result<(std::vec::IntoIter<gst::Buffer>, Option<Timings>), gst::FlowError> {
        let frames: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                Item::Frame(f) => Some(&**f),
                Item::Event(_) => None,
            })
            .collect();
        if frames.is_empty() {
            return Ok((Vec::new().into_iter(), None));
        }
        let composite = {
            let s = lock(&self.settings);
            Composite {
                threshold: s.threshold,
                fill_argb: s.fill_color,
            }
        };
        match runner.run(&frames, config.mode, composite) {
            Ok((buffers, timings)) => {
                gst::trace!(
                    CAT,
                    imp = self,
                    "batch of {}: inference {:?}, compose {:?}",
                    frames.len(),
                    timings.inference,
                    timings.compose
                );
                Ok((buffers.into_iter(), Some(timings)))
            }
            Err(BatchError::Model(ModelError::Interrupted)) => Err(gst::FlowError::Flushing),
            Err(e) => {
                if lock(&self.queue).srcresult.is_err() {
                    return Err(gst::FlowError::Flushing);
                }
                gst::element_imp_error!(self, gst::StreamError::Failed, ("{e}"));
                Err(gst::FlowError::Error)
            }
        }
    }
}
