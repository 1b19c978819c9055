#!/usr/bin/env python3
"""U2NetP's masks in bf16 against fp32, before and after re-centring
(src/model/recentre.rs). A measurement, not a test.

bf16 runs on ONNX Runtime's OpenVINO provider (PyPI onnxruntime-openvino) on
a CPU with bf16 (AVX512_BF16 or AMX); fp32 on the plain CPU provider. For
each photo: MAD (mean |a - b| of the min-max normalised d0, in %) and IoU at
0.5 of bf16 against fp32, for the original and the re-centred model.

  python3 -m venv /tmp/ovvenv
  /tmp/ovvenv/bin/pip install onnxruntime-openvino pillow numpy
  # the re-centred model, from the test that checks it:
  U2NETMATTE_WRITE_RECENTRED=/tmp/u2netp-recentred.onnx cargo test --lib \
      model::recentre::tests::recentred_u2netp
  /tmp/ovvenv/bin/python bench/bf16_recentre_check.py \
      models/u2netp.onnx /tmp/u2netp-recentred.onnx .deps/photos
"""

import pathlib
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

OV = (
    "OpenVINOExecutionProvider",
    {
        "device_type": "CPU",
        # FP32 is the only precision the EP takes on CPU; bf16 comes from
        # OpenVINO's own hint.
        "precision": "FP32",
        "load_config": '{"CPU":{"INFERENCE_PRECISION_HINT":"bf16"}}',
    },
)


def prepare(path: pathlib.Path) -> np.ndarray:
    """rembg's input: LANCZOS to 320x320, / max, ImageNet mean/std, CHW."""
    img = Image.open(path).convert("RGB").resize((320, 320), Image.LANCZOS)
    a = np.asarray(img, dtype=np.float64)
    a = a / np.max(a)
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    a = (a - mean) / std
    return a.transpose(2, 0, 1)[None].astype(np.float32)


def session(model: str, providers) -> ort.InferenceSession:
    s = ort.InferenceSession(model, providers=providers)
    # An EP that refuses its options falls back to the CPU silently.
    if providers[0] is OV and "OpenVINOExecutionProvider" not in s.get_providers():
        sys.exit(f"{model}: OpenVINO did not take the session: {s.get_providers()}")
    return s


def d0(s: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    out = s.run([s.get_outputs()[0].name], {s.get_inputs()[0].name: x})[0][0, 0]
    return (out - out.min()) / (out.max() - out.min())


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    mad = float(np.mean(np.abs(a - b)) * 100)
    ma, mb = a > 0.5, b > 0.5
    union = np.logical_or(ma, mb).sum()
    iou = float(np.logical_and(ma, mb).sum() / union) if union else 1.0
    return mad, iou


def main() -> None:
    original, recentred, photos = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
    sessions = {
        name: (session(path, ["CPUExecutionProvider"]), session(path, [OV]))
        for name, path in (("original", original), ("recentred", recentred))
    }
    worst = {name: (0.0, 1.0) for name in sessions}
    print(f"{'photo':<22}{'original MAD %':>16}{'IoU':>8}{'recentred MAD %':>17}{'IoU':>8}")
    for photo in sorted(photos.iterdir()):
        x = prepare(photo)
        row = f"{photo.name:<22}"
        for name, (fp32, bf16) in sessions.items():
            mad, iou = compare(d0(fp32, x), d0(bf16, x))
            worst[name] = (max(worst[name][0], mad), min(worst[name][1], iou))
            row += f"{mad:>16.3f}{iou:>8.4f}" if name == "original" else f"{mad:>17.3f}{iou:>8.4f}"
        print(row)
    # The two fp32 models agree too (the rewrite is exact in fp32).
    x = prepare(sorted(photos.iterdir())[0])
    exact = np.max(np.abs(d0(sessions["original"][0], x) - d0(sessions["recentred"][0], x)))
    for name, (mad, iou) in worst.items():
        print(f"{name}: worst MAD {mad:.3f} %, worst IoU {iou:.4f}")
    print(f"fp32 original vs recentred (normalised d0): max |diff| {exact:.2e}")


if __name__ == "__main__":
    main()
