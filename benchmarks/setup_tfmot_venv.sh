#!/usr/bin/env bash
# Creates .venv-tfmot/: the separate environment of the tfmot baseline.
#
#   bash benchmarks/setup_tfmot_venv.sh
#   .venv-tfmot/bin/python benchmarks/tfmot_baseline.py --epochs=4
#
# tensorflow-model-optimization (tfmot) prunes only tf_keras (Keras 2) models
# and sets TF_USE_LEGACY_KERAS=1 when imported, so it cannot share .venv/
# (Keras 3) with tf_clicktrain. This environment holds TensorFlow (CPU),
# tf_keras, tfmot, tensorflow-datasets, and this repository on the path
# through a .pth file (the package's code without its dependencies: the
# baseline uses only examples/offline_datasets.py, loaded by file path, to read
# the same offline-capable datasets, and never imports the Keras-3 parts).
# A .pth file rather than `pip install --no-deps -e .`: the latter runs
# setup.py's native build, which rewrites the LiteRT library inside the
# shared source tree that .venv/ uses.
#
# Pins: tfmot 0.8.1 declares absl-py~=1.2, numpy~=1.23 and dm-tree~=0.1.1;
# TensorFlow 2.21 and tensorflow-datasets 4.9.10 accept absl-py 1.4 and
# numpy 1.26, so that set installs with pip's resolver. tf_keras declares a
# dependency on the `tensorflow` distribution (not `tensorflow-cpu`), so it
# and tfmot are installed with --no-deps to keep the CPU-only TensorFlow.
#
# Idempotent: a second run finds the stamp and does nothing. Environment:
# PYTHON (default python3) creates the venv; TFMOT_VENV_FORCE=1 reinstalls.
# The datasets themselves are prepared on first use (see examples/offline_datasets.py),
# in $TFDS_DATA_DIR or ~/tensorflow_datasets, shared with .venv/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv-tfmot"
PY="$VENV/bin/python"
PIP_LOG="$VENV/pip.log"
STAMP="$VENV/.setup_tfmot_venv.stamp"
REQUIREMENTS=(
  "tensorflow-cpu==2.21.*"
  "tensorflow-datasets==4.9.10"
  "importlib_resources"
  "absl-py~=1.4"
  "numpy~=1.26"
  "dm-tree~=0.1.8"
  "six~=1.14"
)
NO_DEPS=(
  "tf-keras==2.21.*"
  "tensorflow-model-optimization==0.8.1"
)
KEY="$(printf '%s\n' "${REQUIREMENTS[@]}" "${NO_DEPS[@]}" "$ROOT" "$(${PYTHON:-python3} --version 2>&1)")"

log() { printf '[setup_tfmot_venv %3ds] %s\n' "$SECONDS" "$*"; }
quiet_pip() {
  if ! "$PY" -m pip "$@" --progress-bar off >>"$PIP_LOG" 2>&1; then
    echo "setup_tfmot_venv: 'pip $*' failed; the end of $PIP_LOG:" >&2
    tail -n 60 "$PIP_LOG" >&2
    exit 1
  fi
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" && -z "${TFMOT_VENV_FORCE:-}" ]]; then
  log "up to date ($VENV)"
  exit 0
fi

if [[ ! -x "$PY" ]]; then
  log "creating $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
fi
# Keep the environment out of git without touching the repository's files.
echo '*' >"$VENV/.gitignore"
: >"$PIP_LOG"

log "pip: upgrading pip (log: $PIP_LOG)"
quiet_pip install --upgrade pip
log "pip: ${REQUIREMENTS[*]}"
quiet_pip install "${REQUIREMENTS[@]}"
log "pip (--no-deps): ${NO_DEPS[*]}"
quiet_pip install --no-deps "${NO_DEPS[@]}"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
log "this repository on the path: $SITE/tf_clicktrain_repo.pth"
printf '%s\n' "$ROOT" >"$SITE/tf_clicktrain_repo.pth"

log "checking imports"
"$PY" - <<'EOF'
import importlib.util
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras

assert os.environ.get("TF_USE_LEGACY_KERAS") == "1", "tfmot did not select tf_keras"
assert importlib.util.find_spec("tensorflow_datasets") is not None
assert importlib.util.find_spec("tf_clicktrain") is not None  # not imported
print(f"tensorflow {tf.__version__}, tf_keras {tf_keras.__version__}, "
      f"tfmot {tfmot.__version__}, python {sys.version.split()[0]}")
EOF
"$PY" -m pip check >>"$PIP_LOG" 2>&1 || log "pip check reports conflicts (expected for the --no-deps pins; see $PIP_LOG)"
printf '%s' "$KEY" >"$STAMP"
log "done: $VENV"
