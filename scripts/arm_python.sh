#!/usr/bin/env bash
# An aarch64 CPython 3.11 with numpy and onnxruntime, run on this x86 machine by qemu-aarch64, for
# benchmarks/bench_ort_arm.py (onnxruntime on arm, counted in executed instructions).
#
#     bash scripts/arm_python.sh            # once; needs root for apt (adds the arm64 package lists)
#
# What it does, into ${EDGESEQ_CACHE:-~/.cache/edgeseq}/arm-python (idempotent):
#   root/   Debian's arm64 python3.11 and the libraries it and onnxruntime load, unpacked (not installed)
#   site/   the aarch64 wheels of onnxruntime (the host's version) and numpy, unpacked
#   root/proc/cpuinfo, root/sys/devices/system/cpu/*: a one-core arm description. qemu-aarch64 -L root
#   looks up absolute paths under root first; onnxruntime's cpuinfo library crashes on the host's x86
#   files (bench_ort_arm.py rewrites cpuinfo for the -cpu it runs).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"
DEST="${EDGESEQ_CACHE:-$HOME/.cache/edgeseq}/arm-python"
ORT="$("$PY" -c 'import onnxruntime; print(onnxruntime.__version__)')"
if [ -f "$DEST/ready-$ORT" ]; then
  echo "arm python ready: $DEST"
  exit 0
fi
command -v qemu-aarch64 >/dev/null || { echo "qemu-aarch64 is missing: apt-get install qemu-user" >&2; exit 1; }
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
fi
apt-get update -qq
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/debs" "$TMP/wheels" "$TMP/root" "$TMP/site"
(cd "$TMP/debs" && apt-get download -qq \
  python3.11-minimal:arm64 libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 libc6:arm64 \
  libexpat1:arm64 zlib1g:arm64 libstdc++6:arm64 libgcc-s1:arm64 libffi8:arm64 libbz2-1.0:arm64 \
  liblzma5:arm64 libssl3:arm64 libuuid1:arm64 libcrypt1:arm64 2>/dev/null)
for d in "$TMP"/debs/*.deb; do dpkg -x "$d" "$TMP/root"; done
"$PY" -m pip download -q --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
  --python-version 3.11 --implementation cp -d "$TMP/wheels" "onnxruntime==$ORT" numpy
for w in "$TMP"/wheels/*.whl; do "$PY" -m zipfile -e "$w" "$TMP/site"; done
mkdir -p "$TMP/root/proc" "$TMP/root/sys/devices/system/cpu/cpu0"
for f in possible present online; do echo 0 >"$TMP/root/sys/devices/system/cpu/$f"; done
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$TMP" "$DEST"
trap - EXIT
rm -rf "$DEST/debs" "$DEST/wheels"
touch "$DEST/ready-$ORT"
echo "arm python ready: $DEST"
