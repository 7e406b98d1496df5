#!/usr/bin/env bash
# The CPU-sized quality runs behind benchmarks/results/quality/cpu/ (SmolLM2 fp32,
# the first 4096 tokens of the World English Bible, 2 cores): the methods table at
# two cache sizes, then the prefill-chunk study (the paper feeds one token at a time).
# Sliding window with re-computation (method recompute) is left to the GPU: it
# prefills a whole window per scored token (1.2M tokens here, hours on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=benchmarks/results/quality/cpu
common=(--model smollm2 --text bible --tokens 4096 --max-model-len 4096 --enforce-eager)
$PY -m benchmarks.perplexity "${common[@]}" \
  --methods dense,window,sink:1,sink:2,sink:4,sink:8 \
  --cache 288 --cache 544 --chunk window --out "$OUT/methods"
for chunk in 1 32 128; do
  $PY -m benchmarks.perplexity "${common[@]}" --methods sink:4 --cache 288 \
    --chunk "$chunk" --out "$OUT/chunk-$chunk"
done
