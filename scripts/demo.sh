#!/usr/bin/env bash
# The demo: real photos through the element in a plain gst-launch-1.0
# pipeline, as a user would run it. Writes cut-outs, masks and composites
# to outputs/.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export GST_PLUGIN_PATH=$top/target/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}

rm -rf outputs && mkdir -p outputs/input outputs/cutout outputs/mask outputs/composite
i=0
for name in astronaut chelsea coffee motorcycle_left; do
  cp ".deps/photos/$name.png" "outputs/input/$(printf %04d $i).png"
  printf '%04d.png  %s.png\n' "$i" "$name" >> outputs/index.txt
  i=$((i + 1))
done
last=$((i - 1))

# run OUTPUT-DIR ELEMENT-PROPERTIES...
run() {
  local out=$1; shift
  local pipeline="multifilesrc location=outputs/input/%04d.png caps=image/png stop-index=$last ! pngdec ! videoconvert ! u2netmatte $* ! pngenc ! multifilesink location=outputs/$out/%04d.png"
  echo "gst-launch-1.0 $pipeline"
  local start=$SECONDS
  # shellcheck disable=SC2086
  gst-launch-1.0 -q $pipeline
  echo "  -> outputs/$out/ ($((SECONDS - start)) s)"
}

run cutout mode=alpha
run mask mode=mask
run composite mode=composite fill-color=0xff00b140 threshold=0.5

echo
echo "Inputs (and which photo each is): outputs/input/, outputs/index.txt"
echo "Transparent cut-outs (alpha = soft mask):  outputs/cutout/"
echo "Soft masks (GRAY8):                         outputs/mask/"
echo "Composited on green (threshold 0.5):        outputs/composite/"
