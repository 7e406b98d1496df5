#!/usr/bin/env bash
# On the GPU machine (DEVELOPERS.md "GPU machine"): install the vLLM 0.32.0
# bundle and this project, then run the GPU tests and/or the benchmarks.
#
#   scripts/gpu.sh PARTS_DIR [tests|models|bench|all|install] [extra pytest / bench args]
#
# PARTS_DIR holds the bundle parts (shared/gpu/build-bundle.sh) and, where
# pytest is missing on the machine, its wheels (.gpu-bundle/tools).
# Logs and results go to $OUT (default /tmp/out).
set -euo pipefail
cd "$(dirname "$0")/.."
parts=${1:?usage: scripts/gpu.sh PARTS_DIR [tests|models|bench|all|install]}
what=${2:-tests}
shift 2 || shift $#
site=/tmp/site
out=${OUT:-/tmp/out}
mkdir -p "$out"
bash "$parts/install-bundle.sh" "$parts" "$site"
export PYTHONPATH=$site
if ! python3 -c "import pytest, tqdm" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target "$site" "$parts"/tools/*.whl
fi
python3 -m pip install -q --no-deps --no-build-isolation --upgrade --target "$site" . \
  2>&1 | grep -v "already exists" || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
status=0
run_pytest() {  # LOG_NAME TEST_PATH [pytest args]: full log in $out, summary here
  local log="$out/$1.log" path=$2
  shift 2
  python3 -m pytest "$path" -p no:cacheprovider -q -s -rA "$@" > "$log" 2>&1 \
    || status=$?
  grep -E "MEASURED|PASSED|FAILED|passed|failed|Error" "$log" | tail -60
}
if [ "$what" = tests ] || [ "$what" = all ]; then
  run_pytest gpu-tests tests/gpu "$@"
fi
if [ "$what" = models ]; then  # the support matrix's GPU column (README)
  run_pytest models-tests tests/models "$@"
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  python3 -m benchmarks.gpu_bench --out "$out" "$@" || status=$?
fi
exit $status
