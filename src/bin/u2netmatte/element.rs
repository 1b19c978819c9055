// SPDX-License-Identifier: MPL-2.0
//! The u2netmatte element as the command line and the service configure it.

use gst::prelude::*;
use gst_video::prelude::*;

use crate::codec::OutputPicture;

use crate::{LookArgs, Mode, ModelArgs, Precision, Provider};

pub fn mode_nick(mode: Mode) -> &'static str {
    match mode {
        Mode::Alpha => "alpha",
        Mode::Composite => "composite",
        Mode::Mask => "mask",
        Mode::Blur => "blur",
    }
}

fn provider_nick(p: Provider) -> &'static str {
    match p {
        Provider::Auto => "auto",
        Provider::Cuda => "cuda",
        Provider::Cpu => "cpu",
        Provider::Openvino => "openvino",
    }
}

fn precision_nick(p: Precision) -> &'static str {
    match p {
        Precision::Fp32 => "fp32",
        Precision::Bf16 => "bf16",
    }
}

/// GStreamer, with the element registered from this binary (no plugin
/// path needed).
pub fn init() -> Result<(), String> {
    gst::init().map_err(|e| e.to_string())?;
    gstu2netmatte::plugin_register_static().map_err(|e| e.to_string())
}

/// A `u2netmatte` element set up as `model` and `look` say; elements
/// given one `shared_session` name batch their frames together.
pub fn make(
    model: &ModelArgs,
    look: &LookArgs,
    shared_session: Option<&str>,
) -> Result<gst::Element, String> {
    let matte = gst::ElementFactory::make("u2netmatte")
        .property("model", &model.model)
        .property("batch-size", model.batch_size)
        .property("device-id", model.device_id)
        .property("inference-size", model.inference_size)
        .property("batch-timeout", model.batch_timeout)
        .property_from_str("provider", provider_nick(model.provider))
        .property_from_str("precision", precision_nick(model.precision))
        .property("threads", model.threads)
        .property_from_str("mode", mode_nick(look.mode))
        .property("threshold", look.threshold)
        .property("fill-color", look.fill_color)
        .property("feather", look.feather)
        .property("blur-radius", look.blur_radius)
        .build()
        .map_err(|e| format!("the u2netmatte element: {e}"))?;
    if let Some(lib) = &model.ort_library {
        matte.set_property("ort-library", lib.to_string_lossy().as_ref());
    }
    if let Some(name) = shared_session {
        matte.set_property("shared-session", name);
    }
    Ok(matte)
}

/// Hands `f` the rows of an output frame of the element.
pub fn with_output<T>(
    sample: &gst::Sample,
    f: impl FnOnce(&OutputPicture) -> Result<T, String>,
) -> Result<T, String> {
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
    f(&pic)
}
