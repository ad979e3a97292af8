#!/usr/bin/env bash
# benchmarks/gpu.py on a bare lent GPU machine, which has python3 with torch (CUDA) but no package
# registry: the Python packages it lacks travel as wheels in .whl/bench (ignored by git).
#
# 1. Here, once (about 27 MB; uses pip's registry):
#        bash benchmarks/gpu.sh --fetch-wheels
# 2. One call of the device tool, from the repository root:
#        command: bash benchmarks/gpu.sh        carry: [".whl/bench"]        timeout_s: 420
#    Arguments after the script go to gpu.py (e.g. `bash benchmarks/gpu.sh --compile --bf16`).
#    It writes $OUT/gpu.json and $OUT/gpu.log (benchmarks/results/ when OUT is unset).
set -uo pipefail
WHEELS=.whl/bench

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    # The versions of the development environment; the device machine runs Python 3.12 on x86-64.
    # docrep publishes no wheel: one is built from its source distribution (pure Python).
    pip=(python3 -m pip)
    [[ -x .venv/bin/python ]] && pip=(.venv/bin/python -m pip)
    platform=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
    mkdir -p "$WHEELS/optional"
    "${pip[@]}" download -q --no-deps --only-binary=:all: "${platform[@]}" -d "$WHEELS" \
        anndata==0.12.19 array-api-compat==1.16.0 donfig==0.8.1.post1 google-crc32c==1.9.0 legacy-api-wrap==1.5 \
        ml-collections==1.1.0 mudata==0.3.10 natsort==8.4.0 numcodecs==0.16.6 pynndescent==0.7.0 pyro-api==0.1.2 \
        pyro-ppl==1.9.2 scanpy==1.11.5 scverse-misc==0.0.3 scvi-tools==1.4.2 session-info2==0.4.1 sparse==0.19.3 \
        umap-learn==0.5.12 zarr==3.1.6 || exit 1
    "${pip[@]}" wheel -q --no-deps --no-build-isolation -w "$WHEELS" docrep==0.3.2 || exit 1
    # anndata 0.12 needs pandas < 3; installed there only when the machine's pandas is 3 or later
    "${pip[@]}" download -q --no-deps --only-binary=:all: "${platform[@]}" -d "$WHEELS/optional" \
        pandas==2.3.3 pytz==2026.6 tzdata==2026.6 || exit 1
    ls "$WHEELS" "$WHEELS/optional"
    du -sh "$WHEELS"
    exit 0
fi

out="${OUT:-benchmarks/results}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
if ! python3 -c 'import sys, pandas; sys.exit(int(pandas.__version__.split(".")[0]) >= 3)'; then
    echo "pandas $(python3 -c 'import pandas; print(pandas.__version__)') here: installing pandas 2.3.3 for anndata"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$WHEELS"/optional/*.whl || exit 1
fi
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm --format=csv,noheader
# gpu.py keeps to its own 270 s limit; this only stops a run that hangs
timeout 330 python3 benchmarks/gpu.py --out "$out/gpu.json" "$@" 2>&1 | tee "$out/gpu.log"
status=$?
# the GPU correctness checks of the synthetic-data metrics: seconds, so they ride along
timeout 60 python3 benchmarks/gpu_checks.py 2>&1 | tee -a "$out/gpu.log"
exit "$status"
