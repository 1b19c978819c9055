// SPDX-License-Identifier: MPL-2.0
//! Between GStreamer buffers and the GStreamer-free parts: mapping frames,
//! preparing the model input, the output buffers (pooled), metas.

use gst::prelude::*;
use gst_video::prelude::*;

use super::caps;
use crate::engine::Mask;
use crate::matte::{Composite, Matter, Mode, OutFrame, to_rgba};
use crate::prep::Preparer;

/// Output buffer pools kept at once: frames of a few sizes may alternate.
const MAX_POOLS: usize = 4;
/// The most bytes of buffers the element's own pool keeps for reuse; a
/// burst beyond it (keeping up through a slow start) gets buffers of its
/// own, freed when done, so that the pool does not keep its peak.
const MAX_POOLED_BYTES: usize = 128 << 20;
/// The pool keeps this many whatever their size.
const MIN_POOLED: u32 = 2;

/// Pools of output buffers, one per output frame layout: downstream's
/// where it proposed one that fits (see `allocation.rs`), else the element's
/// own, whose buffers have GStreamer's default layout for the caps.
#[derive(Default)]
pub struct OutputPools {
    pools: Vec<OutputPool>,
}

struct OutputPool {
    info: gst_video::VideoInfo,
    pool: gst::BufferPool,
    /// Downstream proposed it.
    downstream: bool,
    /// Downstream was asked (ALLOCATION) for this layout.
    decided: bool,
}

impl Drop for OutputPools {
    fn drop(&mut self) {
        self.clear();
    }
}

impl OutputPools {
    /// The pool frames of `info` take their buffers from.
    fn pool_for(&mut self, info: &gst_video::VideoInfo) -> Result<gst::BufferPool, String> {
        let i = match self.pools.iter().position(|p| &p.info == info) {
            Some(i) => i,
            None => self.insert(info.clone(), new_pool(info)?, false, false),
        };
        Ok(self.pools[i].pool.clone())
    }

    /// An output buffer for a frame of `info`, never waiting: the element
    /// holds frames (two batches, or a keep-up window) that downstream's
    /// buffers would not come back from, so when every pooled buffer is out
    /// it takes one of its own, freed when done. The pools' lock is not
    /// held while a pool is asked.
    pub fn acquire(
        pools: &std::sync::Mutex<Self>,
        info: &gst_video::VideoInfo,
    ) -> Result<gst::Buffer, String> {
        let pool = super::imp::lock(pools).pool_for(info)?;
        let dont_wait =
            gst::BufferPoolAcquireParams::with_flags(gst::BufferPoolAcquireFlags::DONTWAIT);
        let acquired = match pool.acquire_buffer(Some(&dont_wait)) {
            Err(gst::FlowError::Eos) => return unpooled(info),
            other => other,
        };
        let mut pools = super::imp::lock(pools);
        let Some(i) = pools.pools.iter().position(|p| p.pool == pool) else {
            return acquired.map_err(|e| format!("could not get an output buffer: {e:?}"));
        };
        match acquired {
            Ok(buffer) => Ok(buffer),
            // Downstream may have stopped or flushed the pool it lent:
            // frames go on in the element's own.
            Err(e) if pools.pools[i].downstream => {
                gst::debug!(
                    super::imp::CAT,
                    "downstream's pool gives no buffer ({e:?}): using the element's own"
                );
                let own = new_pool(info)?;
                pools.pools[i].pool = own.clone();
                pools.pools[i].downstream = false;
                drop(pools);
                match own.acquire_buffer(Some(&dont_wait)) {
                    Err(gst::FlowError::Eos) => unpooled(info),
                    other => other.map_err(|e| format!("could not get an output buffer: {e:?}")),
                }
            }
            Err(e) => Err(format!("could not get an output buffer: {e:?}")),
        }
    }

    /// Downstream is to be asked again for each layout (it was relinked,
    /// or asked for a renegotiation).
    pub fn forget_decisions(&mut self) {
        for p in &mut self.pools {
            p.decided = false;
        }
    }

    /// Whether downstream is still to be asked for a pool for `info`.
    pub fn undecided(&self, info: &gst_video::VideoInfo) -> bool {
        !self.pools.iter().any(|p| &p.info == info && p.decided)
    }

    /// Lets go of `pool` wherever it serves (a layout of earlier caps), so
    /// that it can be configured anew.
    pub fn release(&mut self, pool: &gst::BufferPool) {
        self.pools.retain(|p| {
            let kept = &p.pool != pool;
            if !kept {
                let _ = p.pool.set_active(false);
            }
            kept
        });
    }

    /// Frames of `info` take their buffers from `pool` (active, configured
    /// for `info`) from now on, or from the element's own pool if none.
    pub fn decide(
        &mut self,
        info: &gst_video::VideoInfo,
        pool: Option<gst::BufferPool>,
    ) -> Result<(), String> {
        let own = self
            .pools
            .iter()
            .position(|p| &p.info == info && !p.downstream);
        match (pool, own) {
            (None, Some(i)) => self.pools[i].decided = true,
            (None, None) => {
                self.insert(info.clone(), new_pool(info)?, false, true);
            }
            (Some(pool), _) => {
                self.pools.retain(|p| {
                    let kept = &p.info != info;
                    if !kept && p.pool != pool {
                        let _ = p.pool.set_active(false);
                    }
                    kept
                });
                self.insert(info.clone(), pool, true, true);
            }
        }
        Ok(())
    }

    fn insert(
        &mut self,
        info: gst_video::VideoInfo,
        pool: gst::BufferPool,
        downstream: bool,
        decided: bool,
    ) -> usize {
        if self.pools.len() == MAX_POOLS {
            let old = self.pools.remove(0);
            let _ = old.pool.set_active(false);
        }
        self.pools.push(OutputPool {
            info,
            pool,
            downstream,
            decided,
        });
        self.pools.len() - 1
    }

    pub fn clear(&mut self) {
        for p in self.pools.drain(..) {
            let _ = p.pool.set_active(false);
        }
    }
}

/// A buffer in the default layout of `info`, outside any pool.
fn unpooled(info: &gst_video::VideoInfo) -> Result<gst::Buffer, String> {
    gst::Buffer::with_size(info.size())
        .map_err(|e| format!("cannot allocate a {}-byte output buffer: {e}", info.size()))
}

fn new_pool(info: &gst_video::VideoInfo) -> Result<gst::BufferPool, String> {
    let size = u32::try_from(info.size()).map_err(|_| {
        format!(
            "a {}x{} {} frame ({} bytes) is too large for a buffer pool",
            info.width(),
            info.height(),
            info.format().to_str(),
            info.size()
        )
    })?;
    let pool = gst_video::VideoBufferPool::new();
    let caps = info.to_caps().map_err(|e| e.to_string())?;
    let mut config = pool.config();
    let kept = u32::try_from(MAX_POOLED_BYTES / info.size().max(1))
        .unwrap_or(u32::MAX)
        .max(MIN_POOLED);
    config.set_params(Some(&caps), size, 0, kept);
    pool.set_config(config).map_err(|e| e.to_string())?;
    pool.set_active(true).map_err(|e| e.to_string())?;
    Ok(pool.upcast())
}

/// Timestamps, flags and metas of `from` onto `to`. Metas that describe
/// memory (GstVideoMeta) or colours (the output has other colours) stay
/// behind, as videoconvert leaves them; those that `to`'s pool put there
/// (its own GstVideoMeta: its layout) stay on it.
fn copy_metadata(from: &gst::BufferRef, to: &mut gst::BufferRef) -> Result<(), String> {
    from.copy_into(
        to,
        gst::BufferCopyFlags::FLAGS | gst::BufferCopyFlags::TIMESTAMPS | gst::BufferCopyFlags::META,
        ..,
    )
    .map_err(|e| format!("cannot copy the frame's metadata: {e}"))?;
    let colorspace = gst::glib::Quark::from_str("colorspace");
    to.foreach_meta_mut(|meta| {
        if meta.has_tag_by_quark(colorspace) && !meta.flags().contains(gst::MetaFlags::POOLED) {
            std::ops::ControlFlow::Continue(gst::buffer::BufferMetaForeachAction::Remove)
        } else {
            std::ops::ControlFlow::Continue(gst::buffer::BufferMetaForeachAction::Keep)
        }
    });
    Ok(())
}

/// The buffer an arriving frame's output is made from: in the RGBA modes
/// one from `pools`, for the frame's colours; in mask mode one without
/// memory, for its metadata alone.
pub fn new_output(
    pools: &std::sync::Mutex<OutputPools>,
    out_info: &gst_video::VideoInfo,
    mode: Mode,
) -> Result<gst::Buffer, String> {
    if mode == Mode::Mask {
        Ok(gst::Buffer::new())
    } else {
        OutputPools::acquire(pools, out_info)
    }
}

/// Prepares an arriving frame: writes its model input to `tensor` and its
/// metadata (and in the RGBA modes its colours) to `output`, from
/// [`new_output`]. After this, `input` can go back upstream.
pub fn prepare(
    preparer: &mut Preparer,
    input: &gst::Buffer,
    in_info: &gst_video::VideoInfo,
    out_info: &gst_video::VideoInfo,
    mode: Mode,
    tensor: &mut [f32],
    mut output: gst::Buffer,
) -> Result<gst::Buffer, String> {
    let has_meta = input.meta::<gst_video::VideoMeta>().is_some();
    if !has_meta && input.size() < in_info.size() {
        return Err(format!(
            "buffer of {} bytes is smaller than the {} bytes a {}x{} {} frame needs",
            input.size(),
            in_info.size(),
            in_info.width(),
            in_info.height(),
            in_info.format().to_str()
        ));
    }
    let map = gst_video::VideoFrameRef::from_buffer_ref_readable(input.as_ref(), in_info).map_err(
        |e| {
            format!(
                "cannot map a {}x{} {} frame: {e}",
                in_info.width(),
                in_info.height(),
                in_info.format().to_str()
            )
        },
    )?;
    let layout = caps::layout_of(in_info.format())
        .ok_or_else(|| format!("unsupported format {}", in_info.format().to_str()))?;
    let frame = crate::prep::Frame {
        data: map.plane_data(0).map_err(|e| e.to_string())?,
        width: map.width(),
        height: map.height(),
        stride: map.plane_stride()[0] as usize,
        layout,
    };
    preparer
        .prepare(&frame, tensor)
        .map_err(|e| e.to_string())?;

    let out = output.make_mut();
    copy_metadata(input, out)?;
    if mode != Mode::Mask {
        let mut out_map = gst_video::VideoFrameRef::from_buffer_ref_writable(out, out_info)
            .map_err(|e| format!("cannot write an output frame: {e}"))?;
        to_rgba(&frame, out_frame(&mut out_map)?).map_err(|e| e.to_string())?;
    }
    Ok(output)
}

fn out_frame<'a>(
    map: &'a mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
) -> Result<OutFrame<'a>, String> {
    let (width, height) = (map.width(), map.height());
    let stride = map.plane_stride()[0] as usize;
    let data = map.plane_data_mut(0).map_err(|e| e.to_string())?;
    Ok(OutFrame {
        data,
        width,
        height,
        stride,
    })
}

/// The output buffer of a prepared frame, before its mask is applied: the
/// prepared buffer itself in the RGBA modes, a new GRAY8 one in mask mode.
pub fn output_of(
    pools: &std::sync::Mutex<OutputPools>,
    prepared: gst::Buffer,
    out_info: &gst_video::VideoInfo,
    mode: Mode,
) -> Result<gst::Buffer, String> {
    if mode != Mode::Mask {
        return Ok(prepared);
    }
    let mut output = OutputPools::acquire(pools, out_info)?;
    copy_metadata(&prepared, output.make_mut())?;
    Ok(output)
}

/// Applies `mask` to an output buffer from [`output_of`].
pub fn apply_mask(
    matter: &mut Matter,
    output: &mut gst::Buffer,
    out_info: &gst_video::VideoInfo,
    mode: Mode,
    mask: &Mask,
    composite: Composite,
) -> Result<(), String> {
    let mut out_map =
        gst_video::VideoFrameRef::from_buffer_ref_writable(output.make_mut(), out_info)
            .map_err(|e| format!("cannot write an output frame: {e}"))?;
    matter
        .apply(
            mode,
            &mask.data,
            (mask.width, mask.height),
            out_frame(&mut out_map)?,
            composite,
        )
        .map_err(|e| e.to_string())
}
