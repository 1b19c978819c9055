// SPDX-License-Identifier: MPL-2.0
//! The `u2netmatte` element: wrapper type, its enums, registration.

use gst::glib;
use gst::prelude::*;

mod allocation;
pub mod caps;
mod frames;
mod imp;
mod latency;
mod live;
mod sessions;
mod sink;
mod src;
mod state;

/// What the element outputs (the `mode` property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstU2NetMatteMode")]
pub enum U2NetMatteMode {
    #[default]
    #[enum_value(
        name = "Composite: RGBA, the source pixel where the mask is above threshold, else fill-color",
        nick = "composite"
    )]
    Composite,
    #[enum_value(name = "Mask: GRAY8, the soft mask", nick = "mask")]
    Mask,
    #[enum_value(
        name = "Alpha: RGBA, the source with the soft mask as alpha",
        nick = "alpha"
    )]
    Alpha,
    #[enum_value(
        name = "Blur: RGBA, the subject as it is over its background blurred (blur-radius)",
        nick = "blur"
    )]
    Blur,
}

impl From<U2NetMatteMode> for crate::matte::Mode {
    fn from(mode: U2NetMatteMode) -> Self {
        match mode {
            U2NetMatteMode::Composite => Self::Composite,
            U2NetMatteMode::Mask => Self::Mask,
            U2NetMatteMode::Alpha => Self::Alpha,
            U2NetMatteMode::Blur => Self::Blur,
        }
    }
}

/// Where inference runs (the `provider` property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstU2NetMatteProvider")]
pub enum U2NetMatteProvider {
    #[default]
    #[enum_value(
        name = "Auto: CUDA when it can be used, else OpenVINO where ONNX Runtime's OpenVINO build is loaded, else the CPU (with a warning)",
        nick = "auto"
    )]
    Auto,
    #[enum_value(name = "CUDA: fail if CUDA cannot be used", nick = "cuda")]
    Cuda,
    #[enum_value(name = "CPU: ONNX Runtime's own", nick = "cpu")]
    Cpu,
    #[enum_value(
        name = "OpenVINO on the CPU: fail if ONNX Runtime's OpenVINO build cannot run the model",
        nick = "openvino"
    )]
    OpenVino,
}

/// The number format inference computes in (the `precision` property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstU2NetMattePrecision")]
pub enum U2NetMattePrecision {
    #[default]
    #[enum_value(name = "fp32: masks equal rembg's", nick = "fp32")]
    Fp32,
    #[enum_value(
        name = "bf16: on a CPU with AMX or AVX512-BF16, through OpenVINO (elsewhere fp32, with a warning)",
        nick = "bf16"
    )]
    Bf16,
}

impl From<U2NetMattePrecision> for crate::model::Precision {
    fn from(p: U2NetMattePrecision) -> Self {
        match p {
            U2NetMattePrecision::Fp32 => Self::Fp32,
            U2NetMattePrecision::Bf16 => Self::Bf16,
        }
    }
}

impl From<U2NetMatteProvider> for crate::model::Provider {
    fn from(p: U2NetMatteProvider) -> Self {
        match p {
            U2NetMatteProvider::Auto => Self::Auto,
            U2NetMatteProvider::Cuda => Self::Cuda,
            U2NetMatteProvider::Cpu => Self::Cpu,
            U2NetMatteProvider::OpenVino => Self::OpenVino,
        }
    }
}

/// How cuDNN picks its convolution algorithms (the `cudnn-conv-search`
/// property).
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstU2NetMatteConvSearch")]
pub enum U2NetMatteConvSearch {
    #[default]
    #[enum_value(
        name = "Heuristic: cuDNN's heuristics, no stall on a new batch size",
        nick = "heuristic"
    )]
    Heuristic,
    #[enum_value(
        name = "Exhaustive: benchmark every algorithm at each new batch size, then use the fastest",
        nick = "exhaustive"
    )]
    Exhaustive,
    #[enum_value(name = "Default: cuDNN's default algorithm", nick = "default")]
    Default,
}

impl From<U2NetMatteConvSearch> for crate::model::ConvSearch {
    fn from(s: U2NetMatteConvSearch) -> Self {
        match s {
            U2NetMatteConvSearch::Heuristic => Self::Heuristic,
            U2NetMatteConvSearch::Exhaustive => Self::Exhaustive,
            U2NetMatteConvSearch::Default => Self::Default,
        }
    }
}

glib::wrapper! {
    pub struct U2NetMatte(ObjectSubclass<imp::U2NetMatte>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    U2NetMatteMode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    U2NetMatteProvider::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    U2NetMatteConvSearch::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    U2NetMattePrecision::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "u2netmatte",
        gst::Rank::NONE,
        U2NetMatte::static_type(),
    )
}
