#!/usr/bin/env bash
# GPU benchmark of the engine, one command: engine ÷ bare inference_mode loop in fp32 and bf16
# for a ResNet-50-sized CNN and a GPT-2-small-sized LM, the bf16 speed-up, and torchrun scaling
# over every GPU. Prints one JSON line per figure (see benchmarks/bench_gpu.py); on a machine
# without a CUDA device it prints {"skipped": "no CUDA device"} and exits 0.
#
#   benchmarks/gpu.sh [--repeats 3] [--examples N] [--no-torchrun]
#
# Python: $PYTHON, else .venv/bin/python, else python3; it needs a CUDA build of torch and the
# package's dependencies (regress_action itself is taken from this checkout).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || ! gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')" \
    || [[ "$gpus" -lt 1 ]]; then
    echo '{"skipped": "no CUDA device"}'
    exit 0
fi
cd "$root"
exec "$python" "$root/benchmarks/bench_gpu.py" --device cuda --nproc "$gpus" "$@"
