// SPDX-License-Identifier: MPL-2.0
//! Pieces the benches share (`mod common;` in each): where the project is,
//! figures from the environment, and the pipelines they build.
// Each bench is its own crate and uses a part of these.
#![allow(dead_code)]

use gst::prelude::*;

/// The project's folder: where it was built, or BENCH_TOP (on a machine the
/// binary was carried to).
pub fn top() -> String {
    std::env::var("BENCH_TOP").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

/// The environment variable `name` parsed, or `default` when unset or not a
/// number.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The comma-separated list in `name` (or `default`), each entry trimmed,
/// empty ones left out.
pub fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::to_string)
        .collect()
}

/// [`env_list`] as numbers; a bad entry panics at once, naming it (a
/// bench's setting, read before any slow work).
pub fn env_numbers(name: &str, default: &str) -> Vec<f64> {
    env_list(name, default)
        .iter()
        .map(|entry| {
            entry
                .parse()
                .unwrap_or_else(|_| panic!("{name}: {entry:?} is not a number"))
        })
        .collect()
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    env_or(name, default)
}

pub fn env_usize(name: &str, default: usize) -> usize {
    env_or(name, default)
}

/// A pipeline from a gst-launch description (a bench's own, so a bad one is
/// a bug: it panics with the description).
pub fn pipeline(description: &str) -> gst::Pipeline {
    gst::parse::launch(description)
        .unwrap_or_else(|e| panic!("{description}: {e}"))
        .downcast::<gst::Pipeline>()
        .unwrap()
}

/// The appsrc named `name` in `pipeline`.
pub fn app_src(pipeline: &gst::Pipeline, name: &str) -> gst_app::AppSrc {
    pipeline
        .by_name(name)
        .unwrap_or_else(|| panic!("no element {name}"))
        .downcast::<gst_app::AppSrc>()
        .unwrap()
}

/// The appsink named `name` in `pipeline`.
pub fn app_sink(pipeline: &gst::Pipeline, name: &str) -> gst_app::AppSink {
    pipeline
        .by_name(name)
        .unwrap_or_else(|| panic!("no element {name}"))
        .downcast::<gst_app::AppSink>()
        .unwrap()
}
