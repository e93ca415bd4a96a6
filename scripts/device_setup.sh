#!/usr/bin/env bash
# Set up a lent accelerator machine that has no network, then run the benchmark suite (docs/performance.md).
#
#   bash scripts/device_setup.sh [suite arguments...]      # default: --mode full --out-dir "$OUT"
#
# The machine's image (Python 3.12, jax 0.11 for CUDA, flax, optax, orbax, chex, numpy, torch, ...) lacks
# tensorflow-datasets, ml_collections, array_record, tensorboardX (and keras, the backbone's peer). They
# travel as wheels in ./wheels (ignored by git; fetch them here with `bash scripts/device_setup.sh --fetch`),
# are installed with --no-deps into /tmp/site, and the project itself with --no-deps. Then
# benchmarks/suite.py runs; its JSON and Markdown land in $OUT (or benchmarks/results without $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-wheels}
SITE=${SITE:-/tmp/site}
# The wheels the device image lacks (names as on PyPI; versions are whatever `--fetch` got, one each).
PACKAGES="tensorflow-datasets ml_collections array_record tensorboardX dm-tree immutabledict simple_parsing
docstring-parser tensorflow-metadata googleapis-common-protos==1.70.0 termcolor toml importlib_resources
keras namex optree"

if [[ "${1:-}" == "--fetch" ]]; then      # here, with network: wheels for CPython 3.12 on x86-64 Linux
  mkdir -p "$WHEELS"
  plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any"
  # shellcheck disable=SC2086
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat \
      -d "$WHEELS" $PACKAGES
  $PY -m pip wheel -q --no-deps -w "$WHEELS" promise==2.3   # sdist only on PyPI: pure Python, built here
  du -sh "$WHEELS"
  exit 0
fi

if [[ ! -d "$WHEELS" ]]; then
  echo "device_setup: expected the wheels in ./$WHEELS (carry it; fetch with --fetch), found none" >&2
  exit 2
fi
t0=$(date +%s)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" . \
  || echo "device_setup: installing the project failed; running it from the source tree (PYTHONPATH)" >&2
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
"$PY" - <<'EOF'
import importlib, platform
import jax
print("python", platform.python_version(), "| jax", jax.__version__, "|", jax.devices())
for name in ("tensorflow_datasets", "ml_collections", "array_record", "tensorboardX", "keras", "torch",
             "torchvision", "cervix_jax.data", "cervix_jax.train.loop"):
    try:
        m = importlib.import_module(name)
        print(f"  ok   {name} {getattr(m, '__version__', '')}")
    except Exception as e:  # noqa: BLE001
        print(f"  FAIL {name}: {type(e).__name__}: {e}")
EOF
echo "device_setup: installed in $(( $(date +%s) - t0 )) s"
if [[ $# -eq 0 ]]; then
  set -- --mode full --out-dir "${OUT:-benchmarks/results}"
fi
exec "$PY" benchmarks/suite.py "$@"
