#!/usr/bin/env bash
# One pass over everything that needs a CUDA GPU, sized for a short loan of one (about 8 minutes):
#
#     bash benchmarks/gpu_check.sh [LOG_FOLDER]      # default: ./gpu-check
#     GPU_CHECK_SECONDS=300 bash benchmarks/gpu_check.sh   # the whole pass's limit (default 540)
#
# 1. the GPU and torch;
# 2. the model's three paths on CUDA in fp32, and generation's CUDA graph replayed (tests/test_model.py
#    runs them on every device found);
# 3. benchmarks/train_throughput.py --device cuda: the gpt2 preset in bf16, eager, then --compile;
# 4. benchmarks/generate_throughput.py --device cuda;
# 5. `fabric demo --device cuda`: the whole life on the GPU, tokenizer to stories;
# 6. `fabric train --device cuda` from the command line: the small preset, compiled, then resumed
#    (the GPU's random state comes back from the checkpoint), then `fabric inspect`;
# 7. the whole test suite with the GPU visible (tests that pick `auto` meet CUDA).
# (DistributedDataParallel on nccl needs two GPUs: NCCL refuses two ranks on one.)
# Each step has its own time limit, cut to what is left of the whole pass's, logs to LOG_FOLDER/<step>.log, and a failure does not stop the
# rest; the last lines printed are a summary of every step.
set -u
cd "$(dirname "$0")/.."
LOGS=${1:-gpu-check}
BUDGET=${GPU_CHECK_SECONDS:-540}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
WORK=$(mktemp -d)
# `fabric` from this checkout, with no install: the machine may have no network, and its packages
# (torch, tokenizers, safetensors, typer, tqdm, numpy) are the ones the project needs
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$WORK/bin"
printf '#!/bin/sh\nexec python3 -m fabric_cli "$@"\n' >"$WORK/bin/fabric"
chmod +x "$WORK/bin/fabric"
export PATH=$WORK/bin:$PATH
SUMMARY=()

step() {  # step NAME SECONDS COMMAND...: run it with a time limit, log it, note how it ended
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS rc left=$((BUDGET - SECONDS))
    if ((left < 15)); then
        SUMMARY+=("$(printf '%-16s skipped: the pass is out of time' "$name")")
        return
    fi
    ((limit > left)) && limit=$left
    echo "=== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    tail -n 25 "$LOGS/$name.log"
    SUMMARY+=("$(printf '%-16s rc %-3s %4ss' "$name" "$rc" "$((SECONDS - t0))")")
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    python3 -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
    fabric --help | head -n 3
} >"$LOGS/setup.log" 2>&1
cat "$LOGS/setup.log"

step parity 60 python3 -m pytest -q -p no:cacheprovider tests/test_model.py tests/test_decodegraph.py
step train_eager 120 python3 benchmarks/train_throughput.py --device cuda --rounds 2 --steps 60
step train_compile 180 python3 benchmarks/train_throughput.py --device cuda --compile --rounds 1 --steps 60
step generate 90 python3 benchmarks/generate_throughput.py --device cuda
step demo 150 fabric demo --run "$WORK/demo" --device cuda
step train_cli 120 bash -c "export FABRIC_RUN='$WORK/cli'; fabric tokenize >/dev/null && fabric train --device cuda --preset small \
    --compile --steps 100 --snapshot-every 50 && fabric train --resume --steps 150 && fabric inspect"
# pytest-xdist where the machine has it (2 minutes on 8 workers); else one process, several minutes
XDIST=$(python3 -c 'import xdist' 2>/dev/null && echo "-n 8")
step pytest "$([ -n "$XDIST" ] && echo 150 || echo 400)" python3 -m pytest -q -p no:cacheprovider $XDIST

echo "=== summary"
printf '%s\n' "${SUMMARY[@]}"
grep -h -E "^(goal|machine|256 new|at position)|tokens/s median" "$LOGS"/train_*.log "$LOGS"/generate.log 2>/dev/null | cut -c1-220
rm -rf "$WORK"
