// SPDX-License-Identifier: MPL-2.0
//! The ALLOCATION query downstream: output buffers come from downstream's
//! pool where it proposes one that fits, as GstBaseTransform's
//! decide_allocation does; otherwise from the element's own.

use gst::prelude::*;

use super::frames::OutputPools;
use super::imp::{CAT, lock};

/// Asks downstream, once per output layout, for the pool that frames of
/// `info` take their buffers from. Called from the src pad's task before a
/// frame of `info` is pushed: its caps event has gone downstream, and the
/// query is serialized with the frames as it must be. Frames whose buffers
/// were taken before (in the RGBA modes, on arrival) keep the element's.
pub fn decide_once(
    srcpad: &gst::Pad,
    pools: &std::sync::Mutex<OutputPools>,
    info: &gst_video::VideoInfo,
) {
    if !lock(pools).undecided(info) {
        return;
    }
    let proposed = query_pool(srcpad, info);
    let mut pools = lock(pools);
    let pool = proposed.and_then(|(pool, size, min, video_meta)| {
        // It may serve frames of earlier caps: those take the element's
        // own from now on.
        pools.release(&pool);
        match configure(&pool, info, size, min, video_meta) {
            Ok(()) => {
                gst::debug!(
                    CAT,
                    obj = srcpad,
                    "output buffers from downstream's {}",
                    pool.name()
                );
                Some(pool)
            }
            Err(reason) => {
                gst::debug!(
                    CAT,
                    obj = srcpad,
                    "not using downstream's {}: {reason}; using the element's own",
                    pool.name()
                );
                let _ = pool.set_active(false);
                None
            }
        }
    });
    if let Err(e) = pools.decide(info, pool) {
        gst::debug!(CAT, obj = srcpad, "{e}");
    }
}

/// Downstream's first proposed pool, its buffer size and minimum of
/// buffers, and whether downstream reads GstVideoMeta.
fn query_pool(
    srcpad: &gst::Pad,
    info: &gst_video::VideoInfo,
) -> Option<(gst::BufferPool, u32, u32, bool)> {
    let caps = info.to_caps().ok()?;
    let mut query = gst::query::Allocation::new(Some(&caps), true);
    if !srcpad.peer_query(&mut query) {
        gst::debug!(CAT, obj = srcpad, "downstream did not answer ALLOCATION");
        return None;
    }
    let video_meta = query
        .find_allocation_meta::<gst_video::VideoMeta>()
        .is_some();
    let (pool, size, min, _max) = query.allocation_pools().next()?;
    Some((pool?, size, min, video_meta))
}

/// Configures downstream's `pool` for `info` and checks that its buffers
/// hold such a frame where the element writes it: in the caps' default
/// layout, or (if downstream reads GstVideoMeta) in the layout of the
/// GstVideoMeta on them.
fn configure(
    pool: &gst::BufferPool,
    info: &gst_video::VideoInfo,
    size: u32,
    min: u32,
    video_meta: bool,
) -> Result<(), String> {
    if pool.is_active() {
        return Err("it is in use already".into());
    }
    let caps = info.to_caps().map_err(|e| e.to_string())?;
    // Downstream may ask for more room than a frame.
    let size = u32::try_from(info.size())
        .map_err(|e| e.to_string())?
        .max(size);
    // No maximum: the element holds up to two batches of output buffers
    // at once, and a bounded pool would block it before a batch is full.
    let max = 0;
    let mut config = pool.config();
    config.set_params(Some(&caps), size, min, max);
    let meta_option = gst_video::BUFFER_POOL_OPTION_VIDEO_META.as_str();
    if video_meta && pool.options().iter().any(|o| o.as_str() == meta_option) {
        config.add_option(meta_option);
    }
    if pool.set_config(config).is_err() {
        // The pool changed what it could not take: fine if still within ours.
        let config = pool.config();
        config
            .validate_params(Some(&caps), size, min, max)
            .map_err(|_| "it cannot be configured for these caps".to_string())?;
        pool.set_config(config).map_err(|e| e.to_string())?;
    }
    pool.set_active(true).map_err(|e| e.to_string())?;
    let mut buffer = pool
        .acquire_buffer(None)
        .map_err(|e| format!("it gives no buffer: {e:?}"))?;
    let buffer = buffer.make_mut();
    if let Some(meta) = buffer.meta::<gst_video::VideoMeta>()
        && !video_meta
        && (meta.stride() != info.stride() || meta.offset() != info.offset())
    {
        return Err("its buffers have a layout that downstream cannot read".into());
    }
    if buffer.meta::<gst_video::VideoMeta>().is_none() && buffer.size() < info.size() {
        return Err(format!(
            "its buffers of {} bytes are smaller than a frame ({} bytes)",
            buffer.size(),
            info.size()
        ));
    }
    gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, info)
        .map_err(|e| format!("its buffers cannot be written as frames: {e}"))?;
    Ok(())
}
