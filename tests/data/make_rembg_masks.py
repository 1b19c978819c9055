#!/usr/bin/env python3
"""Regenerates tests/data/rembg-u2netp/*.png: rembg's own masks of the demo
photos, the reference the parity test compares the element against.

    make rembg-masks        (installs rembg 2.0.86 in .deps/rembg-venv)

rembg runs the same u2netp.onnx that `make setup` installs, through
`remove(..., only_mask=True)`: the soft mask, before any post-processing.
"""
import os
import sys
from pathlib import Path

top = Path(__file__).resolve().parents[2]
photos = top / ".deps" / "photos"
out = Path(__file__).resolve().parent / "rembg-u2netp"

# rembg looks its models up in $U2NET_HOME: point it at the project's copy
# so that it never downloads anything.
os.environ["U2NET_HOME"] = str(top / "models")

import rembg  # noqa: E402
from PIL import Image  # noqa: E402

session = rembg.new_session("u2netp")
out.mkdir(parents=True, exist_ok=True)
names = sys.argv[1:] or sorted(p.name for p in photos.iterdir())
for name in names:
    img = Image.open(photos / name)
    mask = rembg.remove(img, session=session, only_mask=True)
    assert mask.mode == "L" and mask.size == img.size, (mask.mode, mask.size, img.size)
    dest = out / (Path(name).stem + ".png")
    mask.save(dest, optimize=True)
    print(f"{name}: {img.mode} {img.size[0]}x{img.size[1]} -> {dest.relative_to(top)}")
