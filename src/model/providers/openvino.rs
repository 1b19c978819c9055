// SPDX-License-Identifier: MPL-2.0
//! ONNX Runtime's OpenVINO provider on the CPU, from ONNX Runtime's
//! OpenVINO build (`make setup` puts PyPI's onnxruntime-openvino in
//! `.deps/onnxruntime-openvino`).
//!
//! Two things the build does not do by itself. Its provider library needs
//! OpenVINO's libraries by soname and has no RUNPATH, so they are preloaded
//! from the folder ONNX Runtime came from. And a provider option it does
//! not take (an unknown key, precision=BF16) is only logged: the session
//! then runs every node on the plain CPU provider. The session is
//! therefore made with ONNX Runtime's CPU fallback disabled: either
//! OpenVINO runs the whole model or there is an error that says so.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::ep::{ArbitrarilyConfigurableExecutionProvider, ExecutionProvider};

use super::{Backend, Failure, Opened, effective_precision};
use crate::model::{ModelOptions, Precision, ProviderUsed};
use crate::runtime::Runtime;

/// The libraries the pinned build's provider library needs (it has no
/// RUNPATH), each after those it needs itself.
const DEPENDENCIES: [&str; 3] = [
    "libtbb.so.12",
    "libopenvino.so.2541",
    "libopenvino_onnx_frontend.so.2541",
];

/// The provider library in ONNX Runtime's OpenVINO build.
pub const PROVIDER_FILE: &str = "libonnxruntime_providers_openvino.so";

pub struct OpenVino;

/// Whether the loaded ONNX Runtime has the OpenVINO provider.
pub fn available() -> bool {
    ort::ep::OpenVINO::is_available().unwrap_or(false)
}

impl Backend for OpenVino {
    fn name(&self) -> &'static str {
        "openvino"
    }

    fn worth_trying(&self) -> bool {
        available()
    }

    fn open(
        &self,
        runtime: &Runtime,
        model: &[u8],
        options: &ModelOptions,
    ) -> Result<Opened, Failure> {
        open_with(runtime, model, options, &[])
    }
}

/// As [`OpenVino::open`], with more provider options (`key`, `value`) on
/// top of those `options` give: for trying OpenVINO's options, and for
/// checking that one it does not take is an error, not a silent CPU run.
pub fn open_with(
    runtime: &Runtime,
    model: &[u8],
    options: &ModelOptions,
    extra: &[(&str, &str)],
) -> Result<Opened, Failure> {
    let library = runtime.library();
    if !available() {
        return Err(Failure::Unavailable(format!(
            "the ONNX Runtime loaded from {} has no OpenVINO provider; ONNX Runtime's \
             OpenVINO build is another library (`make setup` puts it in \
             .deps/onnxruntime-openvino), and a process holds the one loaded first: name its \
             libonnxruntime.so.1.24.1 in ort-library or ORT_DYLIB_PATH, for the process's \
             first element",
            library.display()
        )));
    }
    preload_dependencies(library).map_err(Failure::Unavailable)?;
    let (precision, _) = effective_precision(options.precision, true);
    let hint = match precision {
        Precision::Fp32 => "f32",
        Precision::Bf16 => "bf16",
    };
    // OpenVINO's own default on a CPU with AMX is bf16: fp32 is asked
    // for as explicitly as bf16. The provider's `precision` takes only
    // FP32 or ACCURACY on the CPU; bf16 goes through the CPU plugin's
    // configuration.
    let mut provider = ort::ep::OpenVINO::default()
        .with_device_type("CPU")
        .with_precision("FP32")
        .with_arbitrary_config(
            "load_config",
            format!(r#"{{"CPU":{{"INFERENCE_PRECISION_HINT":"{hint}"}}}}"#),
        );
    if options.threads > 0 {
        provider = provider.with_num_threads(options.threads);
    }
    if let Some(dir) = cache_dir(options) {
        provider = provider.with_cache_dir(dir.display());
    }
    for (key, value) in extra {
        provider = provider.with_arbitrary_config(key, value);
    }
    // ONNX Runtime's own pool would only idle: OpenVINO has its threads.
    let builder = super::base_builder(runtime, 1)
        .and_then(|b| b.with_disable_cpu_fallback().map_err(ort::Error::from));
    let session = super::commit_on(builder, provider.build(), model)
        .map_err(|e| Failure::Unavailable(format!("OpenVINO did not take the model: {e}")))?;
    Ok(Opened {
        session,
        used: ProviderUsed::OpenVino { precision },
        description: None,
    })
}

/// OpenVINO compiles the model for the CPU when the session is made; its
/// cache keeps the compiled model for the next start. None where the
/// folder cannot be made (then every start compiles).
fn cache_dir(options: &ModelOptions) -> Option<PathBuf> {
    let dir = options.cache_dir.clone()?;
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// Loads OpenVINO's libraries from `library`'s folder when that folder is
/// an OpenVINO build's (it holds the provider library), once per process
/// and never unloaded (the provider, loaded later, runs on them). Anywhere
/// else the system's loader is left to find them.
fn preload_dependencies(library: &Path) -> Result<(), String> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return Ok(());
    }
    let Some(dir) = library.parent().filter(|d| d.join(PROVIDER_FILE).is_file()) else {
        return Ok(());
    };
    for name in DEPENDENCIES {
        let file = dir.join(name);
        if !file.is_file() {
            continue;
        }
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        // SAFETY: OpenVINO's and TBB's initialisers have no preconditions;
        // the libraries are never unloaded (forgotten below).
        let loaded = unsafe { Library::open(Some(&file), RTLD_NOW | RTLD_LOCAL) }
            .map_err(|e| format!("cannot load {}: {e}", file.display()))?;
        std::mem::forget(loaded);
    }
    *done = true;
    Ok(())
}
