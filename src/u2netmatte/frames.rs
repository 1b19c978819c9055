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

/// Pools of output buffers, one per output frame layout.
#[derive(Default)]
pub struct OutputPools {
    pools: Vec<(gst_video::VideoInfo, gst::BufferPool)>,
}

impl Drop for OutputPools {
    fn drop(&mut self) {
        self.clear();
    }
}

impl OutputPools {
    pub fn acquire(&mut self, info: &gst_video::VideoInfo) -> Result<gst::Buffer, String> {
        let pool = match self.pools.iter().position(|(i, _)| i == info) {
            Some(i) => self.pools[i].1.clone(),
            None => {
                let pool = new_pool(info)?;
                if self.pools.len() == MAX_POOLS {
                    let (_, old) = self.pools.remove(0);
                    let _ = old.set_active(false);
                }
                self.pools.push((info.clone(), pool.clone()));
                pool
            }
        };
        pool.acquire_buffer(None)
            .map_err(|e| format!("could not get an output buffer: {e:?}"))
    }

    pub fn clear(&mut self) {
        for (_, pool) in self.pools.drain(..) {
            let _ = pool.set_active(false);
        }
    }
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
    config.set_params(Some(&caps), size, 0, 0);
    pool.set_config(config).map_err(|e| e.to_string())?;
    pool.set_active(true).map_err(|e| e.to_string())?;
    Ok(pool.upcast())
}

/// Timestamps, flags and metas of `from` onto `to`. Metas that describe
/// memory (GstVideoMeta) or colours (the output has other colours) stay
/// behind, as videoconvert leaves them.
fn copy_metadata(from: &gst::BufferRef, to: &mut gst::BufferRef) -> Result<(), String> {
    from.copy_into(
        to,
        gst::BufferCopyFlags::FLAGS | gst::BufferCopyFlags::TIMESTAMPS | gst::BufferCopyFlags::META,
        ..,
    )
    .map_err(|e| format!("cannot copy the frame's metadata: {e}"))?;
    let colorspace = gst::glib::Quark::from_str("colorspace");
    to.foreach_meta_mut(|meta| {
        if meta.has_tag_by_quark(colorspace) {
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
        super::imp::lock(pools).acquire(out_info)
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
    let mut output = super::imp::lock(pools).acquire(out_info)?;
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
