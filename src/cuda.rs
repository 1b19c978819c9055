// SPDX-License-Identifier: MPL-2.0
//! Readies a process for ONNX Runtime's CUDA provider before it is
//! registered: the NVIDIA driver and the device asked for, then the CUDA 13
//! and cuDNN 9 libraries the provider loads, each preloaded from wherever
//! it is found, so that the provider finds it by its soname
//! without LD_LIBRARY_PATH. Whatever is missing is named in the error.
//!
//! The libraries, read off `libonnxruntime_providers_cuda.so` 1.31.1: NEEDED
//! libcudart, libcublasLt, libcublas, libcurand and the driver's
//! libcuda.so.1; loaded at run time: libcudnn.so.9 (which loads its
//! sub-libraries) and libnvrtc.so.13. libcufft is loaded only by FFT
//! operators, which no U2Net has.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// ONNX Runtime's CUDA provider, beside `libonnxruntime` in its CUDA build.
pub const PROVIDER_FILE: &str = "libonnxruntime_providers_cuda.so";

/// The NVIDIA driver's library: never bundled, it comes with the driver.
pub const DRIVER_FILE: &str = "libcuda.so.1";

/// The oldest CUDA version the driver must support (cuDriverGetVersion's
/// 1000 * major + 10 * minor): ONNX Runtime 1.31.1's CUDA build is CUDA 13.
pub const MIN_DRIVER_CUDA: i32 = 13000;

/// A library the CUDA provider loads, and the PyPI package that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Library {
    pub file: &'static str,
    pub package: &'static str,
    /// Without it the provider cannot run a U2Net; an optional one (NVRTC,
    /// for cuDNN's run-time compiled kernels) is preloaded when found.
    pub required: bool,
}

const fn lib(file: &'static str, package: &'static str, required: bool) -> Library {
    Library {
        file,
        package,
        required,
    }
}

/// In load order, each after the libraries it needs, a package's together;
/// a package is required or optional as a whole.
pub const LIBRARIES: [Library; 14] = [
    lib("libcudart.so.13", "nvidia-cuda-runtime", true),
    lib("libcublasLt.so.13", "nvidia-cublas", true),
    lib("libcublas.so.13", "nvidia-cublas", true),
    lib("libcurand.so.10", "nvidia-curand", true),
    lib("libnvrtc-builtins.so.13.0", "nvidia-cuda-nvrtc", false),
    lib("libnvrtc.so.13", "nvidia-cuda-nvrtc", false),
    lib("libcudnn_graph.so.9", "nvidia-cudnn-cu13", true),
    lib(
        "libcudnn_engines_precompiled.so.9",
        "nvidia-cudnn-cu13",
        true,
    ),
    lib(
        "libcudnn_engines_runtime_compiled.so.9",
        "nvidia-cudnn-cu13",
        true,
    ),
    lib("libcudnn_heuristic.so.9", "nvidia-cudnn-cu13", true),
    lib("libcudnn_ops.so.9", "nvidia-cudnn-cu13", true),
    lib("libcudnn_cnn.so.9", "nvidia-cudnn-cu13", true),
    lib("libcudnn_adv.so.9", "nvidia-cudnn-cu13", true),
    lib("libcudnn.so.9", "nvidia-cudnn-cu13", true),
];

/// Why the CUDA provider cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CudaSetupError {
    #[error(
        "{} is ONNX Runtime's CPU build ({PROVIDER_FILE} is not beside it); `make setup-gpu` \
         fetches the CUDA build: set ort-library or ORT_DYLIB_PATH to \
         .deps/onnxruntime-gpu/libonnxruntime.so.1.31.1",
        .library.display()
    )]
    CpuBuild { library: PathBuf },
    #[error("no NVIDIA driver: {DRIVER_FILE} cannot be loaded ({reason})")]
    NoDriver { reason: String },
    #[error("the NVIDIA driver failed: {call} returned {name} ({code})")]
    Driver {
        call: &'static str,
        code: i32,
        name: String,
    },
    #[error(
        "the NVIDIA driver supports CUDA {}.{} at most; ONNX Runtime's CUDA build needs CUDA 13 \
         (driver 580 or newer)",
        .version / 1000, .version % 1000 / 10
    )]
    OldDriver { version: i32 },
    #[error("the NVIDIA driver sees no CUDA device")]
    NoDevice,
    #[error("device-id={id}, but this machine has {count} CUDA device(s): {names}")]
    DeviceOutOfRange {
        id: i32,
        count: usize,
        names: String,
    },
    #[error(
        "{file} not found (asked the system's loader, then looked in {}); `make setup-gpu` \
         installs it from PyPI's {package}",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Missing {
        file: &'static str,
        package: &'static str,
        searched: Vec<PathBuf>,
    },
    #[error("{file} could not be loaded: {reason}")]
    Unloadable { file: &'static str, reason: String },
}

impl CudaSetupError {
    /// A wrong setting, which no provider can make right: `provider=auto`
    /// reports it instead of running on the CPU.
    pub fn is_setting_error(&self) -> bool {
        matches!(self, Self::DeviceOutOfRange { .. })
    }
}

/// A CUDA device, as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub ordinal: i32,
    pub name: String,
    pub total_memory: u64,
}

/// Where a library was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The system's loader found it (LD_LIBRARY_PATH, ld.so.cache).
    System,
    File(PathBuf),
}

/// What is ready: the device, the driver's CUDA version, each library's
/// source (optional ones not found are absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub device: Device,
    pub driver_cuda: i32,
    pub libraries: Vec<(&'static str, Source)>,
}

impl std::fmt::Display for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CUDA device {} ({}, {} MiB), driver for CUDA {}.{}; ",
            self.device.ordinal,
            self.device.name,
            self.device.total_memory >> 20,
            self.driver_cuda / 1000,
            self.driver_cuda % 1000 / 10
        )?;
        let libraries: Vec<String> = self
            .libraries
            .iter()
            .map(|(file, source)| match source {
                Source::System => format!("{file} (system)"),
                Source::File(path) => path.display().to_string(),
            })
            .collect();
        write!(f, "libraries: {}", libraries.join(", "))
    }
}

/// Loads a library so that later loads by its soname find it.
pub trait Loader {
    /// `what` is a bare file name (the system's loader searches) or a path.
    fn load(&mut self, what: &Path) -> Result<(), String>;
}

/// The NVIDIA driver's answers.
pub trait Driver {
    /// cuDriverGetVersion.
    fn cuda_version(&self) -> Result<i32, CudaSetupError>;
    fn devices(&self) -> Result<Vec<Device>, CudaSetupError>;
}

/// The folders searched after the system's loader, for the ONNX Runtime
/// library `ort_library`: the `cuda` folder `make setup-gpu` and `make
/// install-gpu` fill beside it, its own folder, the layout of a pip install
/// (onnxruntime/capi beside nvidia/*/lib), and the CUDA toolkit's default.
pub fn search_dirs(ort_library: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = ort_library.parent().filter(|d| d.is_absolute()) {
        dirs.push(dir.join("cuda"));
        dirs.push(dir.to_path_buf());
        if let Some(site) = dir.parent().and_then(Path::parent) {
            dirs.push(site.join("nvidia/cu13/lib"));
            dirs.push(site.join("nvidia/cudnn/lib"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    dirs
}

/// Checks the ONNX Runtime build, the driver and `device_id`, and loads
/// every library in `LIBRARIES` order, a package at a time, stopping at the
/// first required package that cannot be loaded.
pub fn prepare_with(
    ort_library: &Path,
    device_id: i32,
    loader: &mut dyn Loader,
    driver: &dyn Driver,
    dirs: &[PathBuf],
) -> Result<Ready, CudaSetupError> {
    check_build(ort_library)?;
    let driver_cuda = driver.cuda_version()?;
    if driver_cuda < MIN_DRIVER_CUDA {
        return Err(CudaSetupError::OldDriver {
            version: driver_cuda,
        });
    }
    let devices = driver.devices()?;
    if devices.is_empty() {
        return Err(CudaSetupError::NoDevice);
    }
    let device = usize::try_from(device_id)
        .ok()
        .and_then(|i| devices.get(i))
        .cloned()
        .ok_or_else(|| CudaSetupError::DeviceOutOfRange {
            id: device_id,
            count: devices.len(),
            names: devices
                .iter()
                .map(|d| format!("{} {}", d.ordinal, d.name))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let mut libraries = Vec::new();
    for package in LIBRARIES.chunk_by(|a, b| a.package == b.package) {
        match load_package(package, loader, dirs) {
            Ok(loaded) => libraries.extend(loaded),
            Err(_) if !package[0].required => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Ready {
        device,
        driver_cuda,
        libraries,
    })
}

/// Whether `ort_library` is ONNX Runtime's CUDA build. A library loaded by
/// the system's name has no folder to look in: ONNX Runtime itself then
/// says whether it has the provider.
pub fn check_build(ort_library: &Path) -> Result<(), CudaSetupError> {
    match ort_library.parent().filter(|d| d.is_absolute()) {
        Some(dir) if !dir.join(PROVIDER_FILE).exists() => Err(CudaSetupError::CpuBuild {
            library: ort_library.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// One package's libraries all from one place, so that no library of one
/// release meets another's (cuDNN refuses sub-libraries of another
/// version, and sonames such as libcudnn.so.9 and libcurand.so.10 are
/// shared by builds for several CUDA versions): the first folder that has
/// them all (set-up's pinned ones), else the system's loader (a package
/// set-up skipped because the system has it).
fn load_package(
    libraries: &[Library],
    loader: &mut dyn Loader,
    dirs: &[PathBuf],
) -> Result<Vec<(&'static str, Source)>, CudaSetupError> {
    let mut unloadable = None;
    for dir in dirs {
        if !libraries.iter().all(|l| dir.join(l.file).exists()) {
            continue;
        }
        let mut loaded = Vec::new();
        for library in libraries {
            let path = dir.join(library.file);
            match loader.load(&path) {
                Ok(()) => loaded.push((library.file, Source::File(path))),
                Err(reason) => {
                    unloadable.get_or_insert(CudaSetupError::Unloadable {
                        file: library.file,
                        reason: format!("{}: {reason}", path.display()),
                    });
                    break;
                }
            }
        }
        if loaded.len() == libraries.len() {
            return Ok(loaded);
        }
    }
    let mut loaded = Vec::new();
    for library in libraries {
        if loader.load(Path::new(library.file)).is_err() {
            return Err(unloadable.unwrap_or_else(|| CudaSetupError::Missing {
                file: library.file,
                package: library.package,
                searched: dirs.to_vec(),
            }));
        }
        loaded.push((library.file, Source::System));
    }
    Ok(loaded)
}

/// Keeps every library loaded for the life of the process: the CUDA
/// provider, loaded later, finds its libraries by soname among those
/// loaded (the dynamic loader matches sonames whatever the scope), and
/// unloading CUDA under it would crash. RTLD_LOCAL: CUDA's symbols stay out
/// of the host process's global scope (a PyTorch or an NVENC plugin there).
struct DlopenLoader;

impl Loader for DlopenLoader {
    fn load(&mut self, what: &Path) -> Result<(), String> {
        use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
        // SAFETY: CUDA's libraries have no initialisers with preconditions;
        // they are never unloaded (forgotten below).
        let library = unsafe { Library::open(Some(what), RTLD_NOW | RTLD_LOCAL) }
            .map_err(|e| describe(&e))?;
        std::mem::forget(library);
        Ok(())
    }
}

/// The driver API, from libcuda.so.1.
struct NvidiaDriver {
    library: libloading::Library,
}

type CuResult = i32;
const CUDA_ERROR_NO_DEVICE: CuResult = 100;

impl NvidiaDriver {
    fn open() -> Result<Self, CudaSetupError> {
        // SAFETY: the driver's library is loaded once and kept while used.
        let library = unsafe { libloading::Library::new(DRIVER_FILE) }.map_err(|e| {
            CudaSetupError::NoDriver {
                reason: describe(&e),
            }
        })?;
        let driver = Self { library };
        // SAFETY: cuInit(unsigned int flags) -> CUresult.
        let init: libloading::Symbol<unsafe extern "C" fn(u32) -> CuResult> =
            driver.symbol(b"cuInit\0")?;
        match unsafe { init(0) } {
            // A driver installed where no GPU is (a container, a VM).
            CUDA_ERROR_NO_DEVICE => Err(CudaSetupError::NoDevice),
            code => driver.check("cuInit", code),
        }?;
        Ok(driver)
    }

    /// A driver call's result, with the driver's name for its error.
    fn check(&self, call: &'static str, code: CuResult) -> Result<(), CudaSetupError> {
        if code == 0 {
            return Ok(());
        }
        type ErrorName = unsafe extern "C" fn(CuResult, *mut *const std::ffi::c_char) -> CuResult;
        let mut text: *const std::ffi::c_char = std::ptr::null();
        let name = match self.symbol::<ErrorName>(b"cuGetErrorName\0") {
            // SAFETY: cuGetErrorName(CUresult, const char **) points `text`
            // at a static NUL-terminated string, or fails.
            Ok(get) if unsafe { get(code, &mut text) } == 0 && !text.is_null() => {
                unsafe { std::ffi::CStr::from_ptr(text) }
                    .to_string_lossy()
                    .into_owned()
            }
            _ => "an unknown CUDA error".to_string(),
        };
        Err(CudaSetupError::Driver { call, code, name })
    }

    fn symbol<T>(&self, name: &[u8]) -> Result<libloading::Symbol<'_, T>, CudaSetupError> {
        // SAFETY: each caller names the symbol's C signature as T.
        unsafe { self.library.get(name) }.map_err(|e| CudaSetupError::NoDriver {
            reason: describe(&e),
        })
    }
}

/// libloading's message with its cause (dlerror's text, which names the
/// file and what is wrong with it).
fn describe(e: &libloading::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

impl Driver for NvidiaDriver {
    fn cuda_version(&self) -> Result<i32, CudaSetupError> {
        let get: libloading::Symbol<unsafe extern "C" fn(*mut i32) -> CuResult> =
            self.symbol(b"cuDriverGetVersion\0")?;
        let mut version = 0;
        // SAFETY: cuDriverGetVersion(int *driverVersion).
        self.check("cuDriverGetVersion", unsafe { get(&mut version) })?;
        Ok(version)
    }

    fn devices(&self) -> Result<Vec<Device>, CudaSetupError> {
        type Count = unsafe extern "C" fn(*mut i32) -> CuResult;
        type Get = unsafe extern "C" fn(*mut i32, i32) -> CuResult;
        type Name = unsafe extern "C" fn(*mut std::ffi::c_char, i32, i32) -> CuResult;
        type Memory = unsafe extern "C" fn(*mut usize, i32) -> CuResult;
        let count: libloading::Symbol<Count> = self.symbol(b"cuDeviceGetCount\0")?;
        let get: libloading::Symbol<Get> = self.symbol(b"cuDeviceGet\0")?;
        let name: libloading::Symbol<Name> = self.symbol(b"cuDeviceGetName\0")?;
        let memory: libloading::Symbol<Memory> = self.symbol(b"cuDeviceTotalMem_v2\0")?;
        let mut n = 0;
        // SAFETY: the driver API's signatures, as declared in cuda.h
        // (CUdevice is an int); buffers are sized as passed.
        unsafe {
            self.check("cuDeviceGetCount", count(&mut n))?;
            let mut devices = Vec::new();
            for ordinal in 0..n {
                let mut device = 0;
                self.check("cuDeviceGet", get(&mut device, ordinal))?;
                let mut buffer = [0u8; 256];
                self.check(
                    "cuDeviceGetName",
                    name(buffer.as_mut_ptr().cast(), buffer.len() as i32 - 1, device),
                )?;
                let mut bytes = 0usize;
                self.check("cuDeviceTotalMem", memory(&mut bytes, device))?;
                devices.push(Device {
                    ordinal,
                    name: std::ffi::CStr::from_bytes_until_nul(&buffer)
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    total_memory: bytes as u64,
                });
            }
            Ok(devices)
        }
    }
}

/// Libraries already loaded by an earlier call: loading is done once per
/// process, the driver and device are checked each time.
static LOADED: Mutex<Option<Vec<(&'static str, Source)>>> = Mutex::new(None);

/// Readies this process for the CUDA provider of `ort_library` on
/// `device_id`.
pub fn prepare(ort_library: &Path, device_id: i32) -> Result<Ready, CudaSetupError> {
    check_build(ort_library)?;
    let driver = driver()?;
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(libraries) = loaded.as_ref() {
        // Libraries need no second load; the build, driver and device
        // still answer for this request.
        let mut already = AlreadyLoaded;
        let mut ready = prepare_with(ort_library, device_id, &mut already, driver, &[])?;
        ready.libraries = libraries.clone();
        return Ok(ready);
    }
    let ready = prepare_with(
        ort_library,
        device_id,
        &mut DlopenLoader,
        driver,
        &search_dirs(ort_library),
    )?;
    *loaded = Some(ready.libraries.clone());
    Ok(ready)
}

/// The driver, opened and initialised once and kept: unloading libcuda
/// after cuInit leaves its threads and handlers pointing at unmapped code.
/// A failure is not kept: the next element asks again.
fn driver() -> Result<&'static NvidiaDriver, CudaSetupError> {
    static DRIVER: OnceLock<NvidiaDriver> = OnceLock::new();
    static OPENING: Mutex<()> = Mutex::new(());
    if let Some(driver) = DRIVER.get() {
        return Ok(driver);
    }
    let _one_at_a_time = OPENING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(driver) = DRIVER.get() {
        return Ok(driver);
    }
    let driver = NvidiaDriver::open()?;
    Ok(DRIVER.get_or_init(|| driver))
}

/// Stands in for the loader once every library is in.
struct AlreadyLoaded;

impl Loader for AlreadyLoaded {
    fn load(&mut self, _what: &Path) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Knows which bare names the system has and which paths load.
    #[derive(Default)]
    struct FakeLoader {
        system: HashSet<&'static str>,
        broken: HashSet<PathBuf>,
        asked: Vec<PathBuf>,
    }

    impl Loader for FakeLoader {
        fn load(&mut self, what: &Path) -> Result<(), String> {
            self.asked.push(what.to_path_buf());
            if what.is_absolute() {
                if self.broken.contains(what) {
                    return Err("undefined symbol: cudaFoo".into());
                }
                return if what.exists() {
                    Ok(())
                } else {
                    Err("no such file".into())
                };
            }
            let name = what.to_str().unwrap();
            if self.system.contains(name) {
                Ok(())
            } else {
                Err(format!("{name}: cannot open shared object file"))
            }
        }
    }

    struct FakeDriver {
        version: i32,
        devices: Vec<Device>,
    }

    impl Driver for FakeDriver {
        fn cuda_version(&self) -> Result<i32, CudaSetupError> {
            Ok(self.version)
        }
        fn devices(&self) -> Result<Vec<Device>, CudaSetupError> {
            Ok(self.devices.clone())
        }
    }

    fn h200() -> FakeDriver {
        FakeDriver {
            version: 13000,
            devices: vec![Device {
                ordinal: 0,
                name: "NVIDIA H200".into(),
                total_memory: 150_000_000_000,
            }],
        }
    }

    /// A folder holding ONNX Runtime's CUDA build and `files` in cuda/.
    fn ort_dir(files: &[&str]) -> (PathBuf, PathBuf) {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("u2m-cuda-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cuda")).unwrap();
        std::fs::write(dir.join(PROVIDER_FILE), b"").unwrap();
        for file in files {
            std::fs::write(dir.join("cuda").join(file), b"").unwrap();
        }
        (dir.join("libonnxruntime.so.1.31.1"), dir)
    }

    fn all_files() -> Vec<&'static str> {
        LIBRARIES.iter().map(|l| l.file).collect()
    }

    #[test]
    fn a_cpu_build_is_named_as_such() {
        let dir = std::env::temp_dir().join(format!("u2m-cpu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let library = dir.join("libonnxruntime.so.1.31.1");
        let e = prepare_with(&library, 0, &mut FakeLoader::default(), &h200(), &[]).unwrap_err();
        assert_eq!(
            e,
            CudaSetupError::CpuBuild {
                library: library.clone()
            }
        );
        let text = e.to_string();
        assert!(
            text.contains("CPU build") && text.contains("make setup-gpu"),
            "{text}"
        );
    }

    /// Only the fake ONNX Runtime's folders: /usr/local/cuda/lib64 may hold
    /// a real CUDA on the machine running the tests.
    fn own_dirs(dir: &Path) -> Vec<PathBuf> {
        vec![dir.join("cuda"), dir.to_path_buf()]
    }

    #[test]
    fn libraries_load_from_the_cuda_folder_in_dependency_order() {
        let (library, dir) = ort_dir(&all_files());
        let mut loader = FakeLoader::default();
        let ready = prepare_with(&library, 0, &mut loader, &h200(), &own_dirs(&dir)).unwrap();
        let expected: Vec<_> = LIBRARIES
            .iter()
            .map(|l| (l.file, Source::File(dir.join("cuda").join(l.file))))
            .collect();
        assert_eq!(ready.libraries, expected);
        // Each once, from the pinned folder.
        let asked: Vec<_> = LIBRARIES
            .iter()
            .map(|l| dir.join("cuda").join(l.file))
            .collect();
        assert_eq!(loader.asked, asked);
        assert_eq!(ready.device.name, "NVIDIA H200");
        let text = ready.to_string();
        assert!(
            text.starts_with("CUDA device 0 (NVIDIA H200, 143051 MiB), driver for CUDA 13.0; "),
            "{text}"
        );
    }

    #[test]
    fn a_package_the_folders_lack_comes_from_the_system_whole() {
        // The folder has cuDNN's libraries but one, and no CUDA runtime;
        // the system has both packages.
        let files: Vec<_> = all_files()
            .into_iter()
            .filter(|f| *f != "libcudart.so.13" && *f != "libcudnn_adv.so.9")
            .collect();
        let (library, dir) = ort_dir(&files);
        let system: HashSet<&'static str> = LIBRARIES
            .iter()
            .filter(|l| l.package == "nvidia-cudnn-cu13" || l.package == "nvidia-cuda-runtime")
            .map(|l| l.file)
            .collect();
        let mut loader = FakeLoader {
            system,
            ..Default::default()
        };
        let ready = prepare_with(&library, 0, &mut loader, &h200(), &own_dirs(&dir)).unwrap();
        let source = |f: &str| {
            ready
                .libraries
                .iter()
                .find(|(n, _)| *n == f)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(source("libcudart.so.13"), Source::System);
        // No cuDNN library from the folder beside one from the system.
        for library in LIBRARIES
            .iter()
            .filter(|l| l.package == "nvidia-cudnn-cu13")
        {
            assert_eq!(source(library.file), Source::System, "{}", library.file);
        }
        assert_eq!(
            source("libcublas.so.13"),
            Source::File(dir.join("cuda/libcublas.so.13"))
        );
    }

    #[test]
    fn the_pinned_folder_comes_before_the_system() {
        let (library, dir) = ort_dir(&all_files());
        let mut loader = FakeLoader {
            system: LIBRARIES.iter().map(|l| l.file).collect(),
            ..Default::default()
        };
        let ready = prepare_with(&library, 0, &mut loader, &h200(), &own_dirs(&dir)).unwrap();
        assert!(
            ready
                .libraries
                .iter()
                .all(|(_, s)| matches!(s, Source::File(_))),
            "{:?}",
            ready.libraries
        );
    }

    #[test]
    fn the_first_missing_library_is_named_with_its_package_and_where_it_was_looked_for() {
        let files: Vec<_> = all_files()
            .into_iter()
            .filter(|f| !f.starts_with("libcudnn"))
            .collect();
        let (library, dir) = ort_dir(&files);
        let dirs = own_dirs(&dir);
        let e = prepare_with(&library, 0, &mut FakeLoader::default(), &h200(), &dirs).unwrap_err();
        assert_eq!(
            e,
            CudaSetupError::Missing {
                file: "libcudnn_graph.so.9",
                package: "nvidia-cudnn-cu13",
                searched: dirs,
            }
        );
        let text = e.to_string();
        assert!(
            text.contains(&format!("{}", dir.join("cuda").display()))
                && text.contains("make setup-gpu")
                && text.contains("nvidia-cudnn-cu13"),
            "{text}"
        );
    }

    #[test]
    fn optional_libraries_may_be_missing() {
        let files: Vec<_> = all_files()
            .into_iter()
            .filter(|f| !f.starts_with("libnvrtc"))
            .collect();
        let (library, dir) = ort_dir(&files);
        let ready = prepare_with(
            &library,
            0,
            &mut FakeLoader::default(),
            &h200(),
            &own_dirs(&dir),
        )
        .unwrap();
        assert_eq!(ready.libraries.len(), LIBRARIES.len() - 2);
        assert!(
            ready
                .libraries
                .iter()
                .all(|(f, _)| !f.starts_with("libnvrtc"))
        );
    }

    #[test]
    fn a_library_that_does_not_load_says_why() {
        let (library, dir) = ort_dir(&all_files());
        let broken = dir.join("cuda/libcublasLt.so.13");
        let mut loader = FakeLoader {
            broken: [broken.clone()].into(),
            ..Default::default()
        };
        let e = prepare_with(&library, 0, &mut loader, &h200(), &own_dirs(&dir)).unwrap_err();
        assert_eq!(
            e,
            CudaSetupError::Unloadable {
                file: "libcublasLt.so.13",
                reason: format!("{}: undefined symbol: cudaFoo", broken.display()),
            }
        );
    }

    #[test]
    fn a_device_id_out_of_range_names_the_devices() {
        let (library, _dir) = ort_dir(&all_files());
        let e = prepare_with(&library, 2, &mut FakeLoader::default(), &h200(), &[]).unwrap_err();
        assert!(e.is_setting_error());
        assert_eq!(
            e.to_string(),
            "device-id=2, but this machine has 1 CUDA device(s): 0 NVIDIA H200"
        );
        let no_devices = FakeDriver {
            version: 13000,
            devices: vec![],
        };
        let e =
            prepare_with(&library, 0, &mut FakeLoader::default(), &no_devices, &[]).unwrap_err();
        assert_eq!(e, CudaSetupError::NoDevice);
        assert!(!e.is_setting_error());
    }

    #[test]
    fn a_driver_older_than_cuda_13_is_refused() {
        let (library, _dir) = ort_dir(&all_files());
        let old = FakeDriver {
            version: 12080,
            ..h200()
        };
        let e = prepare_with(&library, 0, &mut FakeLoader::default(), &old, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the NVIDIA driver supports CUDA 12.8 at most; ONNX Runtime's CUDA build needs CUDA 13 \
             (driver 580 or newer)"
        );
    }

    #[test]
    fn a_pip_installed_onnxruntime_finds_nvidias_wheels_beside_it() {
        let dirs = search_dirs(Path::new(
            "/venv/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1",
        ));
        let site = Path::new("/venv/lib/python3.11/site-packages");
        assert_eq!(
            dirs,
            vec![
                site.join("onnxruntime/capi/cuda"),
                site.join("onnxruntime/capi"),
                site.join("nvidia/cu13/lib"),
                site.join("nvidia/cudnn/lib"),
                PathBuf::from("/usr/local/cuda/lib64"),
            ]
        );
        // A library loaded by the system's name: only the toolkit's folder.
        assert_eq!(
            search_dirs(Path::new("libonnxruntime.so.1")),
            vec![PathBuf::from("/usr/local/cuda/lib64")]
        );
    }

    #[test]
    fn the_projects_onnx_runtime_is_the_cpu_build() {
        // Real files, any machine: set-up's CPU library has no provider
        // beside it, and this is found before the driver is asked.
        let library = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".deps/onnxruntime/libonnxruntime.so.1.31.1");
        assert!(library.exists(), "run `make setup` first");
        assert_eq!(
            prepare(&library, 0).unwrap_err(),
            CudaSetupError::CpuBuild { library }
        );
    }
}
