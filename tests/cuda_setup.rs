// SPDX-License-Identifier: MPL-2.0
//! ONNX Runtime's CUDA build finds the CUDA libraries `make setup-gpu`
//! installed, with no LD_LIBRARY_PATH pointing at them, on a machine with
//! no GPU: a stub NVIDIA driver (one device, no kernels) stands in for the
//! real one. Run by `make check-gpu-setup` (it needs the 0.9 GB of
//! libraries `make setup-gpu` fetches, which `make test` does not).
#![cfg(feature = "cuda")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const CHILD: &str = "U2NETMATTE_CUDA_SETUP_CHILD";

/// The driver API the element asks before registering the provider.
const STUB_DRIVER: &str = r#"
#include <stddef.h>
#include <string.h>
int cuInit(unsigned flags) { return 0; }
int cuDriverGetVersion(int *v) { *v = 13000; return 0; }
int cuDeviceGetCount(int *n) { *n = 1; return 0; }
int cuDeviceGet(int *d, int ordinal) { *d = ordinal; return 0; }
int cuDeviceGetName(char *b, int len, int d) { strncpy(b, "Stub GPU", len); return 0; }
int cuDeviceTotalMem_v2(size_t *bytes, int d) { *bytes = (size_t)80 << 30; return 0; }
"#;

fn gpu_library() -> PathBuf {
    Path::new(TOP).join(".deps/onnxruntime-gpu/libonnxruntime.so.1.31.1")
}

#[test]
#[ignore = "needs `make setup-gpu`; run by `make check-gpu-setup`"]
fn the_cuda_build_loads_every_cuda_library_without_ld_library_path() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    assert!(gpu_library().exists(), "run `make setup-gpu` first");
    let dir = temp_dir("stub-driver");
    let source = dir.join("cuda.c");
    std::fs::write(&source, STUB_DRIVER).unwrap();
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(dir.join("libcuda.so.1"))
        .arg(&source)
        .status()
        .expect("cc runs");
    assert!(status.success(), "the stub driver builds");
    // This process's loader has read LD_LIBRARY_PATH already: a child
    // with only the stub driver's folder there.
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "the_cuda_build_loads_every_cuda_library_without_ld_library_path",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("LD_LIBRARY_PATH", &dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    println!("{text}");
    assert!(output.status.success(), "the child failed:\n{text}");
}

fn child() {
    let pipeline = parse_pipeline(&format!(
        "videotestsrc num-buffers=1 ! video/x-raw,width=32,height=24 ! \
         u2netmatte provider=cuda ort-library={} ! fakesink",
        gpu_library().display()
    ));
    let err = run_pipeline(&pipeline, Duration::from_secs(60)).expect_err("no real GPU");
    println!("provider=cuda -> {err}");
    // The provider itself loaded (its NEEDED CUDA libraries resolved) and
    // stopped only at what the stub driver lacks.
    assert!(
        err.contains("libonnxruntime_providers_cuda.so: undefined symbol: cu"),
        "{err}"
    );
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for library in gstu2netmatte::cuda::LIBRARIES.iter().filter(|l| l.required) {
        let line = maps
            .lines()
            .find(|l| l.ends_with(&format!("/{}", library.file)))
            .unwrap_or_else(|| panic!("{} is not loaded", library.file));
        println!("{}", line.split_whitespace().last().unwrap());
    }
}
