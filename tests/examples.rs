// SPDX-License-Identifier: MPL-2.0
//! The examples run: the Rust embedding, the live pipeline (on a test source
//! where there is no camera) and the Python script with the built plugin.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// The folder of this profile's outputs (`target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf()
}

/// `path`, built by `cargo build <target>` with this test's cargo and
/// profile when it is missing: plain `cargo test` leaves the examples and the
/// plugin's cdylib in the profile folder, but `cargo test --all-targets`
/// builds examples only as test harnesses and does not place the cdylib
/// there. Cargo holds no lock while tests run.
fn built(path: PathBuf, target: &[&str]) -> PathBuf {
    if !path.is_file() {
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .arg("build")
            .args(target)
            .arg("--manifest-path")
            .arg(PathBuf::from(TOP).join("Cargo.toml"));
        if profile_dir().file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo starts");
        assert!(status.success(), "cargo build {target:?} failed");
    }
    assert!(path.is_file(), "{} is not built", path.display());
    path
}

/// The example's executable.
fn example(name: &str) -> PathBuf {
    built(
        profile_dir().join("examples").join(name),
        &["--example", name],
    )
}

fn run(mut cmd: Command) -> String {
    let out = cmd.output().expect("the example starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "exit {:?}: {stderr}",
        out.status.code()
    );
    stdout
}

#[test]
fn embedding_in_a_rust_application() {
    let stdout = run(Command::new(example("embed")));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (line, size) in lines.iter().zip(["640x480", "333x500", "1280x720"]) {
        assert!(line.starts_with(&format!("{size}: ")), "{line}");
        // "...: N bytes out, K% of pixels kept (the disc covers D%)"
        let pct: Vec<f64> = line
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|t| t.contains('.'))
            .map(|t| t.parse().unwrap())
            .collect();
        let (kept, disc) = (pct[0], pct[1]);
        assert!((kept - disc).abs() < 3.0, "{line}");
    }
}

#[test]
fn live_pipeline_blurs_or_replaces_the_background() {
    for (effect, element) in [
        (
            "blur",
            "u2netmatte temporal-smoothing=0.5 inference-size=0 mode=blur",
        ),
        (
            "replace",
            "u2netmatte temporal-smoothing=0.5 inference-size=0 mode=alpha ! mix.sink_1",
        ),
    ] {
        let mut cmd = Command::new(example("webcam"));
        cmd.args([
            "--device",
            "/nonexistent/video0",
            "--headless",
            "--frames",
            "20",
            "--effect",
            effect,
        ]);
        let stdout = run(cmd);
        assert!(stdout.contains(element), "{stdout}");
        let count: u32 = stdout
            .lines()
            .find_map(|l| l.strip_suffix(" frames cut out"))
            .and_then(|n| n.parse().ok())
            .expect("a frame count");
        assert!(count >= 20, "{effect}: {stdout}");
    }
}

#[test]
fn four_live_sources_share_one_session_into_a_grid() {
    let mut cmd = Command::new(example("multicam"));
    cmd.args(["--headless", "--frames", "15", "--size", "160x120"]);
    let stdout = run(cmd);
    let counts: Vec<u32> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("frames cut out per stream: "))
        .expect("the counts per stream")
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 4, "{stdout}");
    assert!(counts.iter().all(|&n| n >= 15), "{counts:?}");
}

#[test]
fn python_script_with_the_built_plugin() {
    init();
    // Debian's python3-gi belongs to the system's Python, whatever else
    // is first on PATH.
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let python_has_gst = Command::new(python)
        .args(["-c", "import gi; gi.require_version('Gst', '1.0')"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        python_has_gst,
        "PyGObject is missing: make setup installs python3-gi and gir1.2-gstreamer-1.0"
    );
    // The plugin's cdylib, loaded by GStreamer from the profile folder.
    let plugin = built(profile_dir().join("libgstu2netmatte.so"), &["--lib"]);
    let plugin_dir = plugin.parent().unwrap();
    let dir = temp_dir("python");
    let out = dir.join("cutout.png");
    let mut cmd = Command::new(python);
    cmd.arg(PathBuf::from(TOP).join("examples/python/cutout.py"))
        .arg(photo("chelsea.png"))
        .arg(&out)
        .env("GST_PLUGIN_PATH", plugin_dir)
        .env("GST_REGISTRY", dir.join("registry.bin"));
    let stdout = run(cmd);
    assert!(stdout.contains("model=u2netp batch-size=1"), "{stdout}");
    assert!(stdout.contains("batch of 1: inference"), "{stdout}");
    let img = image::open(&out).unwrap();
    assert_eq!(
        (img.width(), img.height(), img.color()),
        (451, 300, image::ColorType::Rgba8)
    );
}
