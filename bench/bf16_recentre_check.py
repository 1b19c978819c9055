#!/usr/bin/env python3
"""U2NetP's masks in bf16 against fp32, before and after re-centring
(src/model/recentre.rs), and re-centred with the picture split in two bf16
parts for the first convolution (src/model/split_input.rs), as the element
runs bf16. A measurement, not a test.

bf16 runs on ONNX Runtime's OpenVINO provider (PyPI onnxruntime-openvino) on
a CPU with bf16 (AVX512_BF16 or AMX); fp32 on the plain CPU provider. For
each photo: MAD (mean |a - b| of the min-max normalised d0, in %) and IoU at
0.5 of bf16 against fp32, for the original and the re-centred model.

  python3 -m venv /tmp/ovvenv
  /tmp/ovvenv/bin/pip install onnxruntime-openvino pillow numpy
  # the re-centred model (and beside it the split one, .split.onnx), from
  # the test that checks it:
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


def bf16(a: np.ndarray) -> np.ndarray:
    """`a` rounded to the nearest bf16 (ties to even), as float32."""
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return bits.astype(np.uint32).view(np.float32)


def d0(s: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    if s.get_inputs()[0].shape[1] == 6:
        # The split model reads the picture as its bf16 part, then the rest.
        hi = bf16(x)
        x = np.concatenate([hi, x - hi], axis=1)
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
    models = [("original", original), ("recentred", recentred)]
    split = recentred + ".split.onnx"
    if pathlib.Path(split).is_file():
        models.append(("split", split))
    sessions = {name: (session(path, ["CPUExecutionProvider"]), session(path, [OV])) for name, path in models}
    worst = {name: (0.0, 1.0) for name in sessions}
    print(f"{'photo':<22}" + "".join(f"{name + ' MAD %':>17}{'IoU':>8}" for name in sessions))
    for photo in sorted(photos.iterdir()):
        x = prepare(photo)
        row = f"{photo.name:<22}"
        for name, (_, bf16_session) in sessions.items():
            # Against the original model in fp32.
            mad, iou = compare(d0(sessions["original"][0], x), d0(bf16_session, x))
            worst[name] = (max(worst[name][0], mad), min(worst[name][1], iou))
            row += f"{mad:>17.3f}{iou:>8.4f}"
        print(row)
    # The rewritten models agree with the original in fp32 (exact rewrites).
    x = prepare(sorted(photos.iterdir())[0])
    reference = d0(sessions["original"][0], x)
    for name, (mad, iou) in worst.items():
        print(f"{name}: worst MAD {mad:.3f} %, worst IoU {iou:.4f}")
    for name, (fp32, _) in sessions.items():
        if name != "original":
            exact = np.max(np.abs(reference - d0(fp32, x)))
            print(f"fp32 original vs {name} (normalised d0): max |diff| {exact:.2e}")


if __name__ == "__main__":
    main()
