#!/usr/bin/env bash
# The folder tool beside `rembg p` (rembg 2.0.86, same u2netp.onnx) on the
# same folder: the demo photos at their own sizes, at 1080p and at 4K (PNG
# and JPEG), cut out to PNG. Median of RUNS runs each; CLI_FLAGS are added
# to the folder tool's command line. `make bench-cli`.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-3}
read -r -a flags <<<"${CLI_FLAGS:-}"
work=$top/target/bench-cli
rm -rf "$work" && mkdir -p "$work/in"
py=$top/.deps/rembg-venv/bin/python
"$py" - "$top/.deps/photos" "$work/in" <<'PY'
import sys, pathlib
from PIL import Image
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for p in sorted(src.iterdir()):
    img = Image.open(p).convert("RGB")
    img.save(dst / p.name)
    for tag, w in (("1080p", 1920), ("4k", 3840)):
        h = round(img.height * w / img.width)
        big = img.resize((w, h), Image.LANCZOS)
        big.save(dst / f"{p.stem}_{tag}.jpg", quality=92) if p.suffix == ".jpg" else big.save(dst / f"{p.stem}_{tag}.png")
PY
n=$(ls "$work/in" | wc -l)
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_of() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); awk -v s="$s" -v e="$e" "BEGIN {printf \"%.2f\\n\", e - s}"; }
ours=$(for _ in $(seq "$runs"); do rm -rf "$work/ours"; time_of "$top/target/release/u2netmatte" "$work/in" -o "$work/ours" --quiet "${flags[@]}"; done | median)
theirs=$(for _ in $(seq "$runs"); do rm -rf "$work/rembg"; mkdir -p "$work/rembg"; U2NET_HOME=$top/models time_of "$top/.deps/rembg-venv/bin/rembg" p -m u2netp "$work/in" "$work/rembg"; done | median)
echo "folder: $n images ($(du -sh "$work/in" | cut -f1)), cut-outs to PNG, median of $runs runs"
echo "u2netmatte $work/in -o ... ${CLI_FLAGS:-}: $ours s ($(ls "$work/ours" | wc -l) files)"
echo "rembg p -m u2netp          : $theirs s ($(ls "$work/rembg" | wc -l) files)"
echo "ratio (rembg time / u2netmatte time): $(awk -v a="$theirs" -v b="$ours" "BEGIN {printf \"%.2f\", a / b}")"
