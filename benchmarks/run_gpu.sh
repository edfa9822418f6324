#!/usr/bin/env bash
# Every GPU check of issue #8 in one go, on a machine with one CUDA device (about 10 minutes on an H200):
#
#   1. the CUDA tests (tests/test_cuda.py, the CUDA cases of tests/test_latent_models.py), while
#   2. the hier NLL runs train on the GPU (rnn-hier and srnn-hier, MADE against LSTM low levels of
#      the preset's width and of widths $LSTM_HIDDEN, and narrower MADEs of widths $MADE_HIDDEN,
#      $NLL_STEPS updates each, in parallel; a variant finished on another device, or whose NLL the
#      committed scaling_hier.csv holds, is not re-trained);
#   then, with the GPU otherwise idle (these are timings):
#   3. hier timing, MADE against each LSTM (bench_scaling.py --part hier --device cuda), each LSTM paired
#      with the fastest MADE within ±2 % of its NLL (NLLs of unfinished variants from the CSV's CPU rows);
#   4. Pyro's step against the hand-written torch step at the MIDI config (bench_step.py --device cuda),
#      with Pyro's validation as the trainer's default (first step only) and at every step (always);
#   5. Pyro's fixed cost per step on the GPU (bench_step.py --configs micro --pyro-validation always
#      --with-unvalidated: tiny models, overhead_ms = pyro_ms - torch_ms, with and without Pyro's validation);
#   6. CUDA graphs (bench_graphs.py): eager against captured step, Pyro and torch paths, and the trainer's
#      step eagerly and with --cuda-graph, for the launch-bound models;
#   7. one timed full-size step of every model (bench_fullsize.py --devices cuda).
#
# Usage:  bash benchmarks/run_gpu.sh [LOGDIR]      (default runs/gpu; CSVs go to benchmarks/results/)
# Each part has its own time limit and runs even when an earlier one failed; the summary at the
# end says which failed. DEVICE=cpu HIER_SIZE=tiny NLL_STEPS=2 ... tries the script's plumbing
# without a GPU. PARTS picks parts (default "tests hier step micro graphs fullsize"; the NLL runs
# belong to "hier"), HIER_MODELS the hier models. E.g. the runs of 2026-11-27 (SPEC §5's loss
# normalisation; docs/readme_parts/performance.md), and the one step left: rnn-hier's in-band MADEs,
# trained on a CPU, timed on the GPU (their NLLs and the LSTM's are in the CSV, so nothing trains):
#   PARTS="tests hier" HIER_MODELS=srnn-hier LSTM_HIDDEN="2048" MADE_HIDDEN="6 7 8 9 10 12" NLL_TIMEOUT=355 \
#   bash benchmarks/run_gpu.sh
#   PARTS=hier HIER_MODELS=rnn-hier LSTM_HIDDEN="1536" MADE_HIDDEN="48 64" bash benchmarks/run_gpu.sh
set -u
cd "$(dirname "$0")/.."
LOG=${1:-runs/gpu}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
HIER_SIZE=${HIER_SIZE:-study}
LSTM_HIDDEN=${LSTM_HIDDEN:-256 512 1024 1536}
MADE_HIDDEN=${MADE_HIDDEN:-2 3 4 5 6 7 8}
NLL_STEPS=${NLL_STEPS:-2000}
NLL_TIMEOUT=${NLL_TIMEOUT:-200}
RUNS=${RUNS:-runs/bench_hier}
PARTS=" ${PARTS:-tests hier step micro graphs fullsize} "
HIER_MODELS=${HIER_MODELS:-rnn-hier srnn-hier}
CSV=benchmarks/results/scaling_hier.csv
MODELS=${MODELS:-}  # fullsize and step benchmarks: every model unless named
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$LOG"
status=()

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOG/gpu.txt"
$PY -c "import torch, pyro; print('torch', torch.__version__, 'pyro', pyro.__version__, torch.cuda.is_available())"

# the hier low-level variants, for the NLL runs and for counting the finished ones
hier_variants_py="
import sys; sys.path.insert(0, 'benchmarks')
from pathlib import Path
import pandas as pd
import bench_scaling as b
models = '$HIER_MODELS'.split()
saved = pd.read_csv('$CSV') if Path('$CSV').exists() else None
variants = b.low_level_variants([int(h) for h in '$LSTM_HIDDEN'.split()], [int(w) for w in '$MADE_HIDDEN'.split()])"
part() { [[ "$PARTS" == *" $1 "* ]]; }

# 2. NLL runs in their own process group (killed as a whole at the deadline)
if part hier; then
    setsid $PY -c "$hier_variants_py
b.hier_nll(models, variants, '$HIER_SIZE', $NLL_STEPS, 0, Path('$RUNS'), jobs=8, device='$DEVICE', saved=saved)
" >"$LOG/nll.log" 2>&1 &
    nll_pid=$!
fi

# 1. CUDA tests
if part tests; then
    timeout 200 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_latent_models.py -k "cuda" \
        2>&1 | tee "$LOG/pytest.log"
    status+=("cuda tests: rc=${PIPESTATUS[0]}")
fi

if part hier; then
    deadline=$((SECONDS + NLL_TIMEOUT))
    while kill -0 "$nll_pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 2; done
    if kill -0 "$nll_pid" 2>/dev/null; then
        kill -- -"$nll_pid" 2>/dev/null; sleep 2; kill -9 -- -"$nll_pid" 2>/dev/null
        status+=("hier NLL runs: stopped at ${NLL_TIMEOUT}s")
    else
        wait "$nll_pid"; status+=("hier NLL runs: rc=$?")
    fi
    read -r done_runs expected < <($PY -c "$hier_variants_py
keys = [(m, v) for m in models for v in variants]
print(sum(b.finished_nll_run(Path('$RUNS'), m, v, '$HIER_SIZE', $NLL_STEPS, 0, '$DEVICE') is not None
          or b.saved_nll(saved, m, v, '$HIER_SIZE', $NLL_STEPS, 0) is not None for m, v in keys), len(keys))")

    # 3.-5. timings; the NLLs of the finished runs (and the CSV's) go with them, unfinished ones are not relaunched
    timeout 180 $PY benchmarks/bench_scaling.py --part hier --device $DEVICE --size $HIER_SIZE --hier-models $HIER_MODELS \
        --lstm-hidden $LSTM_HIDDEN --made-hidden $MADE_HIDDEN --nll-steps $NLL_STEPS --no-nll-train --runs "$RUNS" \
        --jobs 8 --steps 20 \
        2>&1 | tee "$LOG/hier.log"
    status+=("hier timing (NLL of $done_runs/$expected variants): rc=${PIPESTATUS[0]}")
fi
if part step; then
    timeout 100 $PY benchmarks/bench_step.py --device $DEVICE --configs midi ${MODELS:+--models $MODELS} \
        --out benchmarks/results/bench_step_$DEVICE.csv 2>&1 | tee "$LOG/step.log"
    status+=("bench_step midi: rc=${PIPESTATUS[0]}")
    timeout 100 $PY benchmarks/bench_step.py --device $DEVICE --configs midi ${MODELS:+--models $MODELS} \
        --pyro-validation always --out benchmarks/results/bench_step_${DEVICE}_always.csv 2>&1 | tee "$LOG/step_always.log"
    status+=("bench_step midi, --pyro-validation always: rc=${PIPESTATUS[0]}")
fi
if part micro; then
    timeout 90 $PY benchmarks/bench_step.py --device $DEVICE --configs micro --pyro-validation always --with-unvalidated \
        --min-time 1 \
        ${MODELS:+--models $MODELS} --out benchmarks/results/bench_step_${DEVICE}_micro.csv 2>&1 | tee "$LOG/step_micro.log"
    status+=("bench_step micro (fixed cost): rc=${PIPESTATUS[0]}")
fi
if part graphs; then
    timeout 150 $PY benchmarks/bench_graphs.py --device $DEVICE --reps 15 --timeout 60 ${MODELS:+--models $MODELS} \
        2>&1 | tee "$LOG/graphs.log"
    status+=("bench_graphs (CUDA graph of a whole step): rc=${PIPESTATUS[0]}")
fi
if part fullsize; then
    timeout 130 $PY benchmarks/bench_fullsize.py --devices $DEVICE --reps 3 ${MODELS:+--models $MODELS} 2>&1 | tee "$LOG/fullsize.log"
    status+=("bench_fullsize: rc=${PIPESTATUS[0]}")
fi

runs_glob="$RUNS/*-$HIER_SIZE-*u-seed0-$DEVICE"; [ "$DEVICE" = cpu ] && runs_glob="$RUNS/*-$HIER_SIZE-*u-seed0"
tar czf "$LOG/runs.tgz" --exclude='*.pt' $runs_glob 2>/dev/null
printf '%s\n' "${status[@]}" | tee "$LOG/summary.txt"
