// SPDX-License-Identifier: MPL-2.0
//! The element in real pipelines: rembg parity on real photos, a
//! gst-launch-style file pipeline, and finding the library and model alone.

mod common;

use std::time::Duration;

use common::*;
use gst::prelude::*;

#[test]
fn masks_equal_rembgs_on_real_photos() {
    for (name, mae, iou) in masks_against_rembg("") {
        assert!(mae <= 0.5, "{name}: MAE {mae:.3}% > 0.5%");
        assert!(iou >= 0.99, "{name}: IoU {iou:.4} < 0.99");
    }
}

#[test]
fn file_pipeline_writes_one_png_per_input() {
    init();
    let dir = temp_dir("files");
    let (input, output) = (dir.join("in"), dir.join("out"));
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&output).unwrap();
    let make = parse_pipeline(&format!(
        "videotestsrc num-buffers=5 pattern=ball ! video/x-raw,width=160,height=120 ! pngenc ! \
         multifilesink location={}/%04d.png",
        input.display()
    ));
    run_pipeline(&make, Duration::from_secs(30)).unwrap();

    let pipeline = parse_pipeline(&format!(
        "multifilesrc location={}/%04d.png caps=image/png stop-index=4 ! pngdec ! videoconvert ! \
         u2netmatte mode=alpha batch-size=2 ! pngenc ! multifilesink location={}/%04d.png",
        input.display(),
        output.display()
    ));
    run_pipeline(&pipeline, Duration::from_secs(120)).unwrap();

    let mut written: Vec<_> = std::fs::read_dir(&output)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    assert_eq!(
        written,
        ["0000.png", "0001.png", "0002.png", "0003.png", "0004.png"]
    );
    for name in written {
        let (_, info) = first_frame(&format!(
            "filesrc location={}/{name} ! pngdec ! appsink name=sink",
            output.display()
        ));
        assert_eq!(
            info.format(),
            gst_video::VideoFormat::Rgba,
            "{name}: a cut-out has alpha"
        );
        assert_eq!((info.width(), info.height()), (160, 120), "{name}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_plugin_finds_library_and_model_without_settings() {
    // No property, no environment: the set-up's library and models/u2netp.onnx.
    init();
    let pipeline = parse_pipeline(
        "videotestsrc num-buffers=2 ! video/x-raw,width=64,height=48 ! u2netmatte ! appsink name=sink sync=false",
    );
    let sink = sink_of(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    assert_eq!(collect_samples(&sink).len(), 2);
    pipeline.set_state(gst::State::Null).unwrap();
}
