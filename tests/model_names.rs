// SPDX-License-Identifier: MPL-2.0
//! Model names are found in rembg's $U2NET_HOME. Alone in its binary: it
//! sets the environment before anything else runs.

mod common;

use std::time::Duration;

use common::*;
use gst::prelude::*;

#[test]
fn a_model_name_is_found_in_u2net_home() {
    let home = temp_dir("u2net-home");
    write_tiny_model(&home.join("my_tiny_model.onnx"), &[1, 3, 64, 64], false);
    // SAFETY: the only test of this binary, before any thread reads the
    // environment.
    unsafe {
        std::env::set_var("U2NET_HOME", &home);
        std::env::remove_var("U2NETMATTE_MODEL_DIR");
    }
    let pipeline = parse_pipeline(
        "videotestsrc num-buffers=3 ! video/x-raw,width=64,height=48 ! u2netmatte model=my_tiny_model mode=mask ! \
         appsink name=sink sync=false",
    );
    let sink = sink_of(&pipeline);
    pipeline.set_state(gst::State::Playing).unwrap();
    assert_eq!(collect_samples(&sink).len(), 3);
    pipeline.set_state(gst::State::Null).unwrap();

    // And a name that is nowhere says where it looked, U2NET_HOME first.
    let pipeline =
        parse_pipeline("videotestsrc num-buffers=1 ! u2netmatte model=not_there ! fakesink");
    let err = run_pipeline(&pipeline, Duration::from_secs(30)).unwrap_err();
    assert!(
        err.contains(&format!("no not_there.onnx in {}", home.display())),
        "{err}"
    );
}
