// SPDX-License-Identifier: MPL-2.0
#![allow(clippy::non_send_fields_in_send_ty, unused_doc_comments)]

//! GStreamer plugin `u2netmatte`: background removal with the U2Net family of
//! models through ONNX Runtime.
//!
//! The element lives in [`u2netmatte`]; the parts that know nothing of
//! GStreamer ([`runtime`], [`model`], [`prep`], [`matte`]) are public so that
//! tests, benchmarks and the command-line tool can use them directly.

use gst::glib;

pub mod bf16;
pub mod blur;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod edge_snap;
pub mod engine;
pub mod image_view;
pub mod mask_scale;
pub mod matte;
pub mod model;
pub mod motion;
pub mod prep;
pub mod priority;
pub mod resample;
pub mod runtime;
pub mod stable_hash;
pub mod temporal;
pub mod u2netmatte;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    // Remember where the plugin file is: set-up puts ONNX Runtime beside it.
    if let Some(file) = plugin.filename() {
        runtime::set_plugin_file(&file);
    }
    u2netmatte::register(plugin)
}

gst::plugin_define!(
    u2netmatte,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
