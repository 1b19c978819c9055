// SPDX-License-Identifier: MPL-2.0
//! Bad input: each case gives a bus error that names its cause and a failed
//! state change or flow error; never a panic, a hang or a silent pass.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use gst::glib;
use gst::prelude::*;

/// Starts `videotestsrc ! u2netmatte <props> ! fakesink` and returns the
/// error it must fail with.
fn start_error(props: &str) -> String {
    let pipeline = parse_pipeline(&format!(
        "videotestsrc num-buffers=2 ! video/x-raw,width=32,height=24 ! u2netmatte {props} ! fakesink"
    ));
    let err = run_pipeline(&pipeline, Duration::from_secs(60)).expect_err("the pipeline must fail");
    println!("u2netmatte {props}\n    -> {err}");
    err
}

#[track_caller]
fn assert_names(err: &str, needle: &str) {
    assert!(
        err.contains(needle),
        "error {err:?} does not say {needle:?}"
    );
}

fn model_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn missing_model_file() {
    let err = start_error("model=/nonexistent/dir/model.onnx");
    assert_names(
        &err,
        "model file /nonexistent/dir/model.onnx does not exist",
    );
}

#[test]
fn unknown_model_name() {
    let err = start_error("model=u2net_no_such_model");
    assert_names(
        &err,
        "model 'u2net_no_such_model' not found: no u2net_no_such_model.onnx in",
    );
}

#[test]
fn file_that_is_not_onnx() {
    let dir = temp_dir("not-onnx");
    let p = model_file(
        &dir,
        "notes.onnx",
        b"these are my holiday notes, not a neural network\n",
    );
    let err = start_error(&format!("model={}", p.display()));
    assert_names(
        &err,
        &format!("model file {} is not a valid ONNX model", p.display()),
    );
}

#[test]
fn truncated_model() {
    let dir = temp_dir("truncated");
    let full = std::fs::read(Path::new(TOP).join("models/u2netp.onnx"))
        .expect("make setup installs u2netp");
    let p = model_file(&dir, "half.onnx", &full[..full.len() / 2]);
    let err = start_error(&format!("model={}", p.display()));
    assert_names(
        &err,
        &format!("model file {} is not a valid ONNX model", p.display()),
    );
}

#[test]
fn onnx_model_with_four_input_channels() {
    let dir = temp_dir("shape");
    let p = dir.join("rgba.onnx");
    write_tiny_model(&p, &[1, 4, 64, 64], false);
    let err = start_error(&format!("model={}", p.display()));
    assert_names(
        &err,
        &format!(
            "model file {} is not U2Net-shaped: input 'x' Float 1x4x64x64 is not Nx3xHxW float",
            p.display()
        ),
    );
}

#[test]
fn onnx_model_with_two_inputs() {
    let dir = temp_dir("two-inputs");
    let p = dir.join("two.onnx");
    write_tiny_model(&p, &[1, 3, 64, 64], true);
    let err = start_error(&format!("model={}", p.display()));
    assert_names(
        &err,
        "is not U2Net-shaped: it has 2 inputs, U2Net has one (Nx3xHxW float)",
    );
}

#[test]
fn missing_onnx_runtime_library() {
    let err = start_error("ort-library=/nonexistent/libonnxruntime.so.1.31.1");
    assert_names(
        &err,
        "ONNX Runtime library /nonexistent/libonnxruntime.so.1.31.1 does not exist",
    );
}

#[test]
fn cuda_asked_for_where_it_cannot_be_used() {
    // Where ONNX Runtime's CPU build (or no GPU) is what this machine has,
    // `cuda` must fail with the reason and `auto` fall back; where CUDA can
    // be used, both run on it.
    let runs_on = loaded_provider();
    let auto = parse_pipeline(
        "videotestsrc num-buffers=1 ! video/x-raw,width=32,height=24 ! u2netmatte provider=auto ! fakesink",
    );
    run_pipeline(&auto, Duration::from_secs(60)).expect("provider=auto runs");
    if runs_on == "CPU" {
        let err = start_error("provider=cuda");
        assert_names(&err, "provider=cuda but CUDA cannot be used:");
        if !loaded_library_has_cuda() {
            // The reason names the library, and what fetches the CUDA build.
            assert_names(
                &err,
                "is ONNX Runtime's CPU build (libonnxruntime_providers_cuda.so is not beside it); `make setup-gpu`",
            );
        }
    } else {
        let cuda = parse_pipeline(
            "videotestsrc num-buffers=1 ! video/x-raw,width=32,height=24 ! u2netmatte provider=cuda ! fakesink",
        );
        run_pipeline(&cuda, Duration::from_secs(60)).expect("provider=cuda runs on a GPU");
    }
}

#[test]
fn cuda_settings_are_properties_that_leave_a_cpu_run_as_it_is() {
    let nick = |el: &gst::Element| {
        let value = el.property_value("cudnn-conv-search");
        glib::EnumValue::from_value(&value)
            .unwrap()
            .1
            .nick()
            .to_string()
    };
    let plain = element(&[]);
    assert_eq!(plain.property::<u32>("gpu-memory-limit"), 0);
    assert_eq!(nick(&plain), "heuristic");
    let pipeline = parse_pipeline(
        "videotestsrc num-buffers=2 ! video/x-raw,width=32,height=24 ! u2netmatte name=m provider=cpu \
         gpu-memory-limit=2048 cudnn-conv-search=exhaustive ! fakesink",
    );
    let m = pipeline.by_name("m").unwrap();
    assert_eq!(m.property::<u32>("gpu-memory-limit"), 2048);
    assert_eq!(nick(&m), "exhaustive");
    run_pipeline(&pipeline, Duration::from_secs(60)).expect("provider=cpu runs");
}

/// Whether the ONNX Runtime the element loads is the CUDA build.
fn loaded_library_has_cuda() -> bool {
    let runtime = gstu2netmatte::runtime::load(None, None, ort::logging::LogLevel::Warning)
        .expect("ONNX Runtime loads")
        .runtime;
    runtime
        .library()
        .parent()
        .is_some_and(|d| d.join("libonnxruntime_providers_cuda.so").exists())
}

#[test]
fn auto_says_at_warning_level_why_cuda_is_not_used() {
    if loaded_provider() != "CPU" {
        return; // CUDA runs here: nothing to warn about.
    }
    let warnings = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = warnings.clone();
    init();
    let category = gst::DebugCategory::get("u2netmatte").expect("the element's category");
    let threshold = category.threshold();
    category.set_threshold(gst::DebugLevel::Warning.max(threshold));
    gst::log::set_active(true);
    // Only this test's element: others in this binary warn the same way.
    let function = gst::log::add_log_function(move |category, level, _, _, _, object, message| {
        if category.name() == "u2netmatte"
            && level == gst::DebugLevel::Warning
            && object.is_some_and(|o| o.to_string().contains("auto-warns"))
            && let Some(text) = message.get()
        {
            sink.lock().unwrap().push(text.to_string());
        }
    });
    let auto = parse_pipeline(
        "videotestsrc num-buffers=1 ! video/x-raw,width=32,height=24 ! u2netmatte name=auto-warns \
         provider=auto ! fakesink",
    );
    let ran = run_pipeline(&auto, Duration::from_secs(60));
    gst::log::remove_log_function(function);
    category.set_threshold(threshold);
    ran.expect("provider=auto runs");
    let warnings = warnings.lock().unwrap();
    let why = warnings
        .iter()
        .find(|w| w.starts_with("CUDA cannot be used, running on the CPU: "))
        .unwrap_or_else(|| panic!("no warning says why CUDA is not used: {warnings:?}"));
    if !loaded_library_has_cuda() {
        assert!(why.contains("is ONNX Runtime's CPU build"), "{why}");
    } else {
        // The CUDA build where CUDA cannot run: no driver or GPU, or the
        // library that is missing.
        assert!(
            why.contains("no NVIDIA driver")
                || why.contains("no CUDA device")
                || why.contains("not found"),
            "{why}"
        );
    }
}

#[test]
fn model_that_loads_but_cannot_run() {
    let dir = temp_dir("cannot-run");
    let good = dir.join("channel0.onnx");
    write_channel_model(&good, 0);
    let pipeline = parse_pipeline(&format!(
        "videotestsrc num-buffers=3 ! video/x-raw,width=32,height=24 ! u2netmatte model={} ! fakesink",
        good.display()
    ));
    run_pipeline(&pipeline, Duration::from_secs(60)).expect("the stand-in model runs");

    let broken = dir.join("channel7.onnx");
    write_channel_model(&broken, 7);
    let err = start_error(&format!("model={}", broken.display()));
    assert_names(&err, "inference failed:");
    assert_names(&err, "indices element out of data bounds");
}

/// Pushes `buffers` through `appsrc caps=<caps> ! u2netmatte ! fakesink` and
/// returns the error the pipeline fails with.
fn stream_error(caps: &str, buffers: Vec<gst::Buffer>) -> String {
    init();
    let pipeline = parse_pipeline(&format!(
        "appsrc name=src caps={caps} format=time ! u2netmatte batch-size=1 ! fakesink"
    ));
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    for b in buffers {
        let _ = src.push_buffer(b);
    }
    let _ = src.end_of_stream();
    let err = run_pipeline(&pipeline, Duration::from_secs(60)).expect_err("the stream must fail");
    println!("appsrc caps={caps} ...\n    -> {err}");
    err
}

#[test]
fn buffer_smaller_than_its_caps() {
    let err = stream_error(
        "video/x-raw,format=RGB,width=64,height=48,framerate=25/1",
        vec![{
            init();
            gst::Buffer::with_size(100).unwrap()
        }],
    );
    assert_names(
        &err,
        "buffer of 100 bytes is smaller than the 9216 bytes a 64x48 RGB frame needs",
    );
}

#[test]
fn caps_the_element_cannot_take() {
    let err = stream_error(
        "video/x-raw,format=I420,width=64,height=48,framerate=25/1",
        vec![{
            init();
            gst::Buffer::with_size(64 * 48 * 3 / 2).unwrap()
        }],
    );
    // The pad refuses caps outside its template before the element sees
    // them, and upstream reports it, as for any GStreamer element.
    assert_names(&err, "reason not-negotiated");
}

#[test]
fn property_values_out_of_range_are_refused() {
    let el = element(&[]);
    let uint = |name: &str| {
        let p = el.find_property(name).unwrap();
        let p = p.downcast_ref::<glib::ParamSpecUInt>().unwrap();
        (p.minimum(), p.maximum())
    };
    assert_eq!(uint("batch-size"), (1, 64));
    assert_eq!(uint("batch-timeout"), (0, 60_000));
    let threshold = el.find_property("threshold").unwrap();
    let threshold = threshold.downcast_ref::<glib::ParamSpecDouble>().unwrap();
    assert_eq!((threshold.minimum(), threshold.maximum()), (0.0, 1.0));
    let device = el.find_property("device-id").unwrap();
    assert_eq!(
        device
            .downcast_ref::<glib::ParamSpecInt>()
            .unwrap()
            .minimum(),
        0
    );

    // From a launch line, GLib refuses the values and the defaults stay.
    let bin =
        parse_pipeline("u2netmatte name=m batch-size=0 threshold=2.0 device-id=-1 ! fakesink");
    let m = bin.by_name("m").unwrap();
    assert_eq!(m.property::<u32>("batch-size"), 4);
    assert_eq!(m.property::<f64>("threshold"), 0.5);
    assert_eq!(m.property::<i32>("device-id"), 0);
}

#[test]
fn ready_only_properties_set_while_playing_are_refused_with_a_warning() {
    let warnings = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = warnings.clone();
    // Setting a property logs: the element's category exists after it.
    let el = element(&[
        ("batch-size", 3u32.to_value()),
        ("provider", "cpu".to_value()),
    ]);
    el.set_property("name", "ready-only");
    let category = gst::DebugCategory::get("u2netmatte").expect("the element's category");
    let threshold = category.threshold();
    category.set_threshold(gst::DebugLevel::Warning.max(threshold));
    gst::log::set_active(true);
    let function = gst::log::add_log_function(move |category, level, _, _, _, object, message| {
        if category.name() == "u2netmatte"
            && level == gst::DebugLevel::Warning
            && object.is_some_and(|o| o.to_string().contains("ready-only"))
            && let Some(text) = message.get()
            && text.contains("cannot change")
        {
            sink.lock().unwrap().push(text.to_string());
        }
    });
    let h = harness_around(el.clone(), false);
    el.set_property("batch-size", 7u32);
    el.set_property_from_str("mode", "mask");
    // Properties that apply at once still do.
    el.set_property("threshold", 0.25f64);
    let playing = (
        el.property::<u32>("batch-size"),
        glib::EnumValue::from_value(&el.property_value("mode")).map(|(_, v)| v.nick().to_owned()),
        el.property::<f64>("threshold"),
    );
    drop(h);
    el.set_state(gst::State::Ready).unwrap();
    el.set_property("batch-size", 5u32);
    let in_ready = el.property::<u32>("batch-size");
    el.set_state(gst::State::Null).unwrap();
    gst::log::remove_log_function(function);
    category.set_threshold(threshold);

    assert_eq!(playing.0, 3, "batch-size changed while PLAYING");
    assert_eq!(
        playing.1.as_deref(),
        Some("composite"),
        "mode changed while PLAYING"
    );
    assert_eq!(playing.2, 0.25);
    assert_eq!(in_ready, 5, "batch-size set in READY");
    let warnings = warnings.lock().unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(
        warnings[0],
        "batch-size cannot change in Playing, only in NULL or READY: keeping 3"
    );
    assert_eq!(
        warnings[1],
        "mode cannot change in Playing, only in NULL or READY: keeping composite"
    );
}
