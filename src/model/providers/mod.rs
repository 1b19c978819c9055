// SPDX-License-Identifier: MPL-2.0
//! Execution providers: each in a module of its own behind [`Backend`], and
//! here the policy that picks one (`provider=auto`) and says why another
//! was not taken. Adding a provider (TensorRT, CoreML, ROCm) is a module
//! and a line in [`open`].

pub mod cpu;
pub mod cuda;
pub mod openvino;

use std::path::Path;

use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};

use super::{ModelError, ModelOptions, Precision, Provider, ProviderUsed};
use crate::runtime::Runtime;

/// A session, where it really runs, and what it runs with (for the log).
pub struct Opened {
    pub session: Session,
    pub used: ProviderUsed,
    pub description: Option<String>,
}

/// Why a provider gave no session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A setting no provider can make right (device-id out of range): an
    /// error whatever the provider asked for.
    Setting(String),
    /// The provider cannot be used here; `provider=auto` tries the next.
    Unavailable(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Setting(e) | Self::Unavailable(e) => f.write_str(e),
        }
    }
}

/// One execution provider.
pub trait Backend {
    /// The `provider` property's nick.
    fn name(&self) -> &'static str;
    /// Whether `provider=auto` should try it at all: a provider the loaded
    /// ONNX Runtime lacks altogether is no fallback to report.
    fn worth_trying(&self) -> bool {
        true
    }
    /// A session on this provider for `model` (ONNX bytes), or why not.
    fn open(
        &self,
        runtime: &Runtime,
        model: &[u8],
        options: &ModelOptions,
    ) -> Result<Opened, Failure>;
}

/// The session options every provider starts from: all of ONNX Runtime's
/// graph optimisations (Level3 is not "all": the CPU's NCHWc layout pass
/// needs `All`, 1.5x), and the `threads` property.
pub fn base_builder(runtime: &Runtime, threads: usize) -> ort::Result<SessionBuilder> {
    let builder = Session::builder(runtime.environment())?
        .with_optimization_level(GraphOptimizationLevel::All)?
        // Inter-op threads are for parallel branches, which U2Net runs
        // sequentially; the intra-op pool is the one that counts.
        .with_inter_threads(1)?;
    if threads > 0 {
        Ok(builder.with_intra_threads(threads)?)
    } else {
        Ok(builder)
    }
}

/// Registers `provider` on `builder`, failing if it cannot be registered,
/// and makes the session: the text of whatever failed.
pub fn commit_on(
    builder: ort::Result<SessionBuilder>,
    provider: ort::ep::ExecutionProviderDispatch,
    model: &[u8],
) -> Result<Session, String> {
    builder
        .map_err(|e| e.to_string())?
        .with_execution_providers([provider.error_on_failure()])
        .map_err(|e| e.to_string())?
        .commit_from_memory(model)
        .map_err(|e| e.to_string())
}

/// A session as `options.provider` asks. `auto`: CUDA, else OpenVINO when
/// the loaded ONNX Runtime has it, else the plain CPU; the reasons the
/// others were not taken are joined in `fallback`.
pub fn open(
    runtime: &Runtime,
    path: &Path,
    model: &[u8],
    options: &ModelOptions,
) -> Result<(Opened, Option<String>), ModelError> {
    let session_error = |reason: String| ModelError::Session {
        path: path.to_path_buf(),
        reason,
    };
    let cpu = || {
        cpu::Cpu
            .open(runtime, model, options)
            .map_err(|e| session_error(e.to_string()))
    };
    let opened = match options.provider {
        Provider::Cpu => (cpu()?, None),
        Provider::Cuda => match cuda::Cuda.open(runtime, model, options) {
            Ok(opened) => (opened, None),
            Err(Failure::Setting(e)) => return Err(ModelError::CudaSetting(e)),
            Err(Failure::Unavailable(e)) => return Err(ModelError::CudaUnavailable(e)),
        },
        Provider::OpenVino => match openvino::OpenVino.open(runtime, model, options) {
            Ok(opened) => (opened, None),
            Err(e) => return Err(ModelError::OpenVinoUnavailable(e.to_string())),
        },
        Provider::Auto => {
            let mut reasons = Vec::new();
            let mut found = None;
            let candidates: [&dyn Backend; 2] = [&cuda::Cuda, &openvino::OpenVino];
            for backend in candidates.into_iter().filter(|b| b.worth_trying()) {
                match backend.open(runtime, model, options) {
                    Ok(opened) => {
                        found = Some(opened);
                        break;
                    }
                    // Only CUDA has settings (device-id) no provider can
                    // make right.
                    Err(Failure::Setting(e)) => return Err(ModelError::CudaSetting(e)),
                    // CUDA comes first: its reason is the warning's own.
                    Err(e) if backend.name() == "cuda" => reasons.push(e.to_string()),
                    Err(e) => reasons.push(format!("{}: {e}", backend.name())),
                }
            }
            let fallback = (!reasons.is_empty()).then(|| reasons.join("; "));
            match found {
                Some(opened) => (opened, fallback),
                None => (cpu()?, fallback),
            }
        }
    };
    Ok(opened)
}

/// Whether this CPU computes in bf16 natively (AMX or AVX512-BF16): the
/// only place `precision=bf16` is faster rather than emulated.
pub fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| cpuinfo_has_bf16(&info))
}

fn cpuinfo_has_bf16(info: &str) -> bool {
    info.lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|flags| {
            flags
                .split_whitespace()
                .any(|f| f == "amx_bf16" || f == "avx512_bf16")
        })
}

/// The precision a provider will really run at, and a warning when it is
/// not the one asked for.
pub fn effective_precision(asked: Precision, on_openvino: bool) -> (Precision, Option<String>) {
    match asked {
        Precision::Fp32 => (Precision::Fp32, None),
        Precision::Bf16 if !on_openvino => (
            Precision::Fp32,
            Some(
                "precision=bf16 needs ONNX Runtime's OpenVINO provider (the plain CPU and CUDA \
                 run fp32 here): running fp32"
                    .into(),
            ),
        ),
        Precision::Bf16 if !cpu_has_bf16() => (
            Precision::Fp32,
            Some(
                "precision=bf16: this CPU has neither AMX-BF16 nor AVX512-BF16: running fp32"
                    .into(),
            ),
        ),
        Precision::Bf16 => (Precision::Bf16, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_is_known_from_amx_or_avx512_bf16_flags() {
        let flags = |f: &str| format!("processor\t: 0\nflags\t\t: fpu sse2 {f} avx2\n");
        assert!(cpuinfo_has_bf16(&flags("amx_bf16 amx_tile")));
        assert!(cpuinfo_has_bf16(&flags("avx512f avx512_bf16")));
        assert!(!cpuinfo_has_bf16(&flags("avx512f avx512_vnni")));
        // A word that merely contains the flag's name is not the flag.
        assert!(!cpuinfo_has_bf16(&flags("xavx512_bf16")));
        assert!(!cpuinfo_has_bf16(""));
    }

    #[test]
    fn bf16_anywhere_but_openvino_runs_fp32_with_a_warning() {
        let (precision, warning) = effective_precision(Precision::Bf16, false);
        assert_eq!(precision, Precision::Fp32);
        assert!(warning.unwrap().contains("OpenVINO"));
        assert_eq!(
            effective_precision(Precision::Fp32, true),
            (Precision::Fp32, None)
        );
        let (precision, warning) = effective_precision(Precision::Bf16, true);
        assert_eq!(precision == Precision::Bf16, cpu_has_bf16());
        assert_eq!(warning.is_some(), !cpu_has_bf16());
    }
}
