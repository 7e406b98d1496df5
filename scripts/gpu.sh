#!/usr/bin/env bash
# On the GPU machine (benchmarks/README.md, "Speed on the GPU"): install a vLLM bundle
# (0.32.0 or 0.33.0, whichever PARTS_DIR holds) and this project, then run the
# GPU tests and/or the benchmarks.
#
#   scripts/gpu.sh PARTS_DIR MODE [extra pytest / bench / perplexity args]
#   MODE: tests | models | bench | all | install | tp | tp-bench | quality | compat
#
# Each bundle installs into its own site, /tmp/site-<bundle hash> (or $SITE), so
# 0.32.0 and 0.33.0 can sit side by side on one warm machine; the installed
# vLLM version is printed and written to $OUT/gpu.txt with the card.
# compat runs tests/gpu and `tests/models -k exact` and writes $OUT/compat.json
# ({"vllm", "gpu", "gpu_tests", "models_exact"}: pytest's summary lines).
#
# quality runs benchmarks.perplexity with the extra args; the model and text
# assets come from PARTS_DIR/assets/assets.tar.* (upload .gpu-bundle/a-assets.tar.*
# there; Qwen2.5 from qwen.tar.*, .gpu-bundle/q-*) and its reports land in
# $OUT/quality. tp and tp-bench need two GPUs and a bundle built --with-ray:
# tp runs tests/gpu/test_gpu_tp.py (TP=2 over Ray), tp-bench the steady
# streaming workload's plugin streams at TP=1 and TP=2 and writes
# $OUT/summary.json (benchmarks/tp_summary.py).
#
# PARTS_DIR holds the bundle parts (made off the machine by the workplace's
# build-bundle.sh: vLLM + its wheels for torch 2.11 / Python 3.12) and, where
# pytest is missing on the machine, its wheels in PARTS_DIR/tools.
# Logs and results go to $OUT (default /tmp/out).
set -euo pipefail
cd "$(dirname "$0")/.."
parts=${1:?usage: scripts/gpu.sh PARTS_DIR [tests|models|bench|all|install|tp|tp-bench|quality]}
what=${2:-tests}
shift 2 || shift $#
if [ ! -f "$parts/bundle.sha256" ]; then
  echo "gpu.sh: $parts/bundle.sha256 missing: upload every bundle part first" >&2
  exit 2
fi
site=${SITE:-/tmp/site-$(cut -c1-12 "$parts/bundle.sha256")}
out=${OUT:-/tmp/out}
mkdir -p "$out"
bash "$parts/install-bundle.sh" "$parts" "$site"
export PYTHONPATH=$site RAY_USAGE_STATS_ENABLED=0
if ! python3 -c "import pytest, tqdm" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target "$site" "$parts"/tools/*.whl
fi
python3 -m pip install -q --no-deps --no-build-isolation --upgrade --target "$site" . \
  2>&1 | grep -v "already exists" || true
vllm_version=$(python3 -c "import vllm; print(vllm.__version__)" 2>/dev/null | tail -1)
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  echo "vllm $vllm_version"
  echo "cpu $(lscpu | sed -n 's/^Model name: *//p') x $(nproc)"
} | tee "$out/gpu.txt"
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
if [ "$what" = compat ]; then  # the GPU suite on this bundle's vLLM
  run_pytest gpu-tests tests/gpu "$@"
  run_pytest models-exact tests/models -k exact "$@"
  python3 - "$out" "$vllm_version" <<'PY'
import json, pathlib, subprocess, sys
out, version = pathlib.Path(sys.argv[1]), sys.argv[2]
def summary(name):
    lines = (out / f"{name}.log").read_text().splitlines()
    return next((l.strip("= ") for l in reversed(lines) if " in " in l), "no summary")
gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip()
result = {"vllm": version, "gpu": gpu, "gpu_tests": summary("gpu-tests"),
          "models_exact": summary("models-exact")}
(out / "compat.json").write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps(result))
PY
fi
if [ "$what" = tp ]; then  # greedy TP=1 vs TP=2 lands in $out/tp_greedy.json
  SINK_RESULTS_DIR=$out run_pytest tp-tests tests/gpu/test_gpu_tp.py "$@"
  mkdir -p /tmp/tp-runs && cp "$out/tp_greedy.json" /tmp/tp-runs/ || status=1
fi
if [ "$what" = tp-bench ]; then  # only raw.json of each run comes back
  for tp in 1 2; do
    extra=()
    [ $tp = 1 ] || extra=(--tensor-parallel-size $tp --distributed-executor-backend ray)
    python3 -m benchmarks.gpu_bench --out /tmp/tp-runs/tp$tp --only p2 \
      --tasks p2_plugin "${extra[@]}" "$@" || status=$?
    mkdir -p "$out/tp$tp" && cp /tmp/tp-runs/tp$tp/raw.json "$out/tp$tp/" || status=1
  done
  cp /tmp/tp-runs/tp_greedy.json "$out/" || true  # from an earlier tp call
  python3 -m benchmarks.tp_summary "$out" || status=$?
fi
if [ "$what" = quality ]; then  # e.g. --model smollm2 --text bible --tokens ...
  export VLLM_SINK_CACHE=/tmp/vllm-sink-plugin
  # Each upload group NAME.tar.* under assets/ (assets: SmolLM2 and the texts;
  # qwen: Qwen2.5-Coder-0.5B) unpacks once into /tmp/vllm-sink-plugin/.
  for group in $(ls "$parts"/assets | sed 's/\.tar\..*//' | sort -u); do
    [ -e "/tmp/.unpacked-$group" ] && continue
    cat "$parts"/assets/"$group".tar.* | tar xf - -C /tmp/
    touch "/tmp/.unpacked-$group"
  done
  python3 -m benchmarks.perplexity "$@" --out /tmp/quality-run || status=$?
  mkdir -p "$out/quality"
  cp /tmp/quality-run/summary.* /tmp/quality-run/curves.json "$out/quality/" || status=1
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  python3 -m benchmarks.gpu_bench --out "$out" "$@" || status=$?
fi
exit $status
