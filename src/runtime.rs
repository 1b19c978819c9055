// SPDX-License-Identifier: MPL-2.0
//! Finding and loading ONNX Runtime's shared library, once per process.
//!
//! `ort` is built with `load-dynamic`: nothing links against libonnxruntime,
//! so a plugin loaded into someone else's process does not drag it in until an
//! element actually needs it. ONNX Runtime allows a single library and a single
//! environment per process, so the first successful load wins and is kept for
//! the life of the process; later requests for another file get the loaded one
//! back, marked so that the caller can warn.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The file name that set-up installs. It does not end in `.so`, so
/// GStreamer's registry scanner does not take it for a plugin when it lies
/// beside ours.
pub const LIBRARY_FILE_NAME: &str = "libonnxruntime.so.1.31.1";

/// Where the project's set-up unpacks ONNX Runtime (see `scripts/setup.sh`).
const SETUP_LIBRARY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.deps/onnxruntime");

/// ONNX Runtime's OpenVINO build: its library's name, and the folder (of
/// set-up, and in the user's data folder after `make install`) that holds
/// it with OpenVINO's libraries.
pub const OPENVINO_LIBRARY_FILE_NAME: &str = "libonnxruntime.so.1.24.1";
const OPENVINO_DIR_NAME: &str = "onnxruntime-openvino";
const SETUP_OPENVINO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.deps/onnxruntime-openvino");

/// Which ONNX Runtime build the defaults look for first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Build {
    /// The plain CPU build (or whatever set-up put in its place).
    #[default]
    Plain,
    /// The OpenVINO build, else the plain one.
    OpenVino,
}

/// Names the system's dynamic loader is asked for last.
const SYSTEM_LIBRARY_NAMES: [&str; 2] = ["libonnxruntime.so.1", "libonnxruntime.so"];

static PLUGIN_FILE: OnceLock<PathBuf> = OnceLock::new();
static LOADED: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

/// Records the path of the plugin's shared object, so that a library installed
/// beside it can be found.
pub fn set_plugin_file(path: &Path) {
    let _ = PLUGIN_FILE.set(path.to_path_buf());
}

/// A loaded ONNX Runtime and its process-wide environment.
pub struct Runtime {
    library: PathBuf,
    environment: ort::environment::Environment,
}

impl Runtime {
    /// The file the library was loaded from.
    pub fn library(&self) -> &Path {
        &self.library
    }

    pub fn environment(&self) -> &ort::environment::Environment {
        &self.environment
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("library", &self.library)
            .finish()
    }
}

/// Why ONNX Runtime could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime library {0} does not exist")]
    Missing(PathBuf),
    #[error("ONNX Runtime library {path} could not be loaded: {reason}")]
    Unloadable { path: PathBuf, reason: String },
    #[error(
        "no ONNX Runtime library found (tried {}); run `make setup`, set the ort-library \
         property or ORT_DYLIB_PATH",
        .tried.join(", ")
    )]
    NotFound { tried: Vec<String> },
    #[error("ONNX Runtime environment could not be created: {0}")]
    Environment(String),
}

/// Where a library request came from; an explicit request must be honoured
/// exactly, a default one may fall through to the next candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Candidate {
    Explicit(PathBuf),
    File(PathBuf),
    SystemName(&'static str),
}

/// How [`load`] answered.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub runtime: Arc<Runtime>,
    /// Set when the caller asked for a different file than the one this
    /// process had already loaded: ONNX Runtime cannot be loaded twice.
    pub ignored_request: Option<PathBuf>,
}

/// Called for each message ONNX Runtime logs: level, category and text.
pub type LogSink = Arc<dyn Fn(ort::logging::LogLevel, &str, &str) + Send + Sync>;

/// Loads ONNX Runtime, or returns the one this process already loaded.
///
/// Order: `explicit` (the element's `ort-library`), then `$ORT_DYLIB_PATH`,
/// then the file `make build` put beside the plugin, then the one `make
/// install` put in `~/.local/share/u2netmatte/onnxruntime`, then the
/// project's set-up folder, then the system's loader. The two explicit sources are final: a
/// missing file there is an error, not a reason to try the next one.
pub fn load(
    explicit: Option<&Path>,
    log: Option<LogSink>,
    log_level: ort::logging::LogLevel,
) -> Result<Loaded, RuntimeError> {
    load_build(explicit, Build::Plain, log, log_level)
}

/// As [`load`]; with [`Build::OpenVino`], where nothing names a library,
/// the OpenVINO build (installed, then set-up's) is looked for before the
/// plain one.
pub fn load_build(
    explicit: Option<&Path>,
    build: Build,
    log: Option<LogSink>,
    log_level: ort::logging::LogLevel,
) -> Result<Loaded, RuntimeError> {
    let env_path = std::env::var_os("ORT_DYLIB_PATH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let user_dir = user_library_dir();
    let mut candidates = candidates(
        explicit,
        env_path.as_deref(),
        PLUGIN_FILE.get().map(|p| p.as_path()),
        user_dir.as_deref(),
    );
    if build == Build::OpenVino && explicit.or(env_path.as_deref()).is_none() {
        let openvino =
            openvino_candidates(user_data_dir().as_deref(), Path::new(SETUP_OPENVINO_DIR));
        candidates.splice(0..0, openvino);
    }

    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(runtime) = loaded.as_ref() {
        if let Some(Candidate::Explicit(path)) = candidates.first() {
            if !path.exists() {
                return Err(RuntimeError::Missing(path.clone()));
            }
            if !same_file(path, &runtime.library) {
                return Ok(Loaded {
                    runtime: runtime.clone(),
                    ignored_request: Some(path.clone()),
                });
            }
        }
        return Ok(Loaded {
            runtime: runtime.clone(),
            ignored_request: None,
        });
    }

    let mut tried = Vec::new();
    for candidate in candidates {
        let path = match &candidate {
            Candidate::Explicit(path) => {
                if !path.exists() {
                    return Err(RuntimeError::Missing(path.clone()));
                }
                path.clone()
            }
            Candidate::File(path) => {
                if !path.exists() {
                    tried.push(path.display().to_string());
                    continue;
                }
                path.clone()
            }
            Candidate::SystemName(name) => PathBuf::from(name),
        };
        match ort::init_from(&path) {
            Ok(builder) => {
                let runtime = build_environment(builder, &path, log, log_level)?;
                let runtime = Arc::new(runtime);
                *loaded = Some(runtime.clone());
                return Ok(Loaded {
                    runtime,
                    ignored_request: None,
                });
            }
            Err(e) => match candidate {
                Candidate::SystemName(name) => tried.push(format!("{name} (system loader)")),
                _ => {
                    return Err(RuntimeError::Unloadable {
                        path,
                        reason: e.to_string(),
                    });
                }
            },
        }
    }
    Err(RuntimeError::NotFound { tried })
}

/// The runtime this process loaded, if any.
pub fn loaded() -> Option<Arc<Runtime>> {
    LOADED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn build_environment(
    builder: ort::environment::EnvironmentBuilder,
    path: &Path,
    log: Option<LogSink>,
    log_level: ort::logging::LogLevel,
) -> Result<Runtime, RuntimeError> {
    let mut builder = builder.with_name("u2netmatte").with_telemetry(false);
    if let Some(log) = log {
        builder = builder.with_logger(Arc::new(move |level, category, _id, _location, message| {
            log(level, category, message)
        }));
    }
    let environment = builder
        .build()
        .map_err(|e| RuntimeError::Environment(e.to_string()))?;
    environment.set_log_level(log_level);
    let library = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(Runtime {
        library,
        environment,
    })
}

/// Where `make install` puts ONNX Runtime: not in GStreamer's plugin folder,
/// whose scanner would try every `.so` of the CUDA build as a plugin.
/// The user's data folder for u2netmatte, where `make install` puts ONNX
/// Runtime and the models: `$XDG_DATA_HOME/u2netmatte`, by default
/// `~/.local/share/u2netmatte`.
pub fn user_data_dir() -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join("u2netmatte"))
}

pub fn user_library_dir() -> Option<PathBuf> {
    user_data_dir().map(|d| d.join("onnxruntime"))
}

fn candidates(
    explicit: Option<&Path>,
    env_path: Option<&Path>,
    plugin_file: Option<&Path>,
    user_dir: Option<&Path>,
) -> Vec<Candidate> {
    if let Some(path) = explicit.or(env_path) {
        return vec![Candidate::Explicit(path.to_path_buf())];
    }
    let mut list = Vec::new();
    if let Some(dir) = plugin_file.and_then(Path::parent) {
        list.push(Candidate::File(dir.join(LIBRARY_FILE_NAME)));
    }
    if let Some(dir) = user_dir {
        list.push(Candidate::File(dir.join(LIBRARY_FILE_NAME)));
    }
    list.push(Candidate::File(
        Path::new(SETUP_LIBRARY_DIR).join(LIBRARY_FILE_NAME),
    ));
    list.extend(SYSTEM_LIBRARY_NAMES.map(Candidate::SystemName));
    list
}

/// Where the OpenVINO build is looked for: `make install`'s, then set-up's.
fn openvino_candidates(data_dir: Option<&Path>, setup_dir: &Path) -> Vec<Candidate> {
    data_dir
        .map(|d| d.join(OPENVINO_DIR_NAME))
        .into_iter()
        .chain([setup_dir.to_path_buf()])
        .map(|dir| Candidate::File(dir.join(OPENVINO_LIBRARY_FILE_NAME)))
        .collect()
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openvino_build_is_looked_for_installed_then_in_setup() {
        let c = openvino_candidates(
            Some(Path::new("/data/u2netmatte")),
            Path::new("/p/.deps/ov"),
        );
        assert_eq!(
            c,
            vec![
                Candidate::File(
                    "/data/u2netmatte/onnxruntime-openvino/libonnxruntime.so.1.24.1".into()
                ),
                Candidate::File("/p/.deps/ov/libonnxruntime.so.1.24.1".into()),
            ]
        );
    }

    #[test]
    fn explicit_path_is_the_only_candidate() {
        let c = candidates(
            Some(Path::new("/opt/ort.so")),
            Some(Path::new("/env/ort.so")),
            Some(Path::new("/plugins/libgstu2netmatte.so")),
            None,
        );
        assert_eq!(c, vec![Candidate::Explicit("/opt/ort.so".into())]);
    }

    #[test]
    fn environment_variable_comes_before_defaults() {
        let c = candidates(None, Some(Path::new("/env/ort.so")), None, None);
        assert_eq!(c, vec![Candidate::Explicit("/env/ort.so".into())]);
    }

    #[test]
    fn defaults_try_beside_plugin_then_installed_then_setup_then_system() {
        let c = candidates(
            None,
            None,
            Some(Path::new("/plugins/libgstu2netmatte.so")),
            Some(Path::new("/home/u/.local/share/u2netmatte/onnxruntime")),
        );
        assert_eq!(
            c,
            vec![
                Candidate::File(PathBuf::from("/plugins").join(LIBRARY_FILE_NAME)),
                Candidate::File(
                    PathBuf::from("/home/u/.local/share/u2netmatte/onnxruntime")
                        .join(LIBRARY_FILE_NAME)
                ),
                Candidate::File(Path::new(SETUP_LIBRARY_DIR).join(LIBRARY_FILE_NAME)),
                Candidate::SystemName("libonnxruntime.so.1"),
                Candidate::SystemName("libonnxruntime.so"),
            ]
        );
    }

    #[test]
    fn not_found_names_every_place_tried() {
        let e = RuntimeError::NotFound {
            tried: vec![
                "/a/lib.so".into(),
                "libonnxruntime.so (system loader)".into(),
            ],
        };
        let text = e.to_string();
        assert!(
            text.contains("/a/lib.so, libonnxruntime.so (system loader)"),
            "{text}"
        );
    }
}
