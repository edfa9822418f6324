#!/usr/bin/env bash
# Pyro's fixed cost per step (bench_step.py --configs micro) of two revisions of the package, timed
# at the same time on two cores, so that both see the same machine (on a shared machine the speed
# of identical runs drifts by 30-50 % between minutes, more than the changes one wants to see).
#
#   bash benchmarks/compare_revisions.sh BASE [NEW] [RUNS]
#
# BASE, NEW: git revisions (NEW defaults to the working tree). The benchmark scripts of the working
# tree time both packages. Each of RUNS rounds (default 2) runs the two at once, each pinned to one
# core (taskset, where present) with one thread, and swaps the cores for the next round. Writes
# $OUT (default benchmarks/results/compare_revisions.csv; one row per model and revision, means over
# the rounds) and prints it; per-round CSVs and logs go to $TMPDIR/compare_revisions/.
# MODELS="f-rnn storn" times only those; MIN_TIME (default 2 s per path) and REPS (default 50)
# are passed to bench_step.py.
set -euo pipefail
base=${1:?usage: compare_revisions.sh BASE [NEW] [RUNS]}
new=${2:-}
runs=${3:-2}
min_time=${MIN_TIME:-2}
reps=${REPS:-50}
models=${MODELS:-}
root=$(git rev-parse --show-toplevel)
python=${PYTHON:-python}
work=${TMPDIR:-/tmp}/compare_revisions
rm -rf "$work"
mkdir -p "$work"
trap 'git -C "$root" worktree remove --force "$work/base" >/dev/null 2>&1 || true;
      git -C "$root" worktree remove --force "$work/new" >/dev/null 2>&1 || true' EXIT

checkout() {  # revision dir: the package at the revision, the working tree's benchmark scripts
  git -C "$root" worktree add --detach -q "$2" "$1"
  cp "$root"/benchmarks/*.py "$2/benchmarks/"
}
checkout "$base" "$work/base"
if [ -n "$new" ]; then checkout "$new" "$work/new"; new_tree=$work/new; else new_tree=$root; fi
new_label=${new:-working-tree}

pin=(); command -v taskset >/dev/null && pin=(taskset -c)
time_tree() {  # core tree out
  (cd "$2" && PYTHONPATH="$2" ${pin[@]:+"${pin[@]}" "$1"} "$python" benchmarks/bench_step.py --configs micro \
     --threads 1 --with-unvalidated --min-time "$min_time" --reps "$reps" ${models:+--models $models} \
     --out "$3" >"$3.log" 2>&1) || { echo "bench_step.py failed in $2, see $3.log" >&2; return 1; }
}
for ((r = 1; r <= runs; r++)); do
  a=$(( (r + 1) % 2 )); b=$(( r % 2 ))
  time_tree "$a" "$work/base" "$work/base_$r.csv" & pid_base=$!
  time_tree "$b" "$new_tree" "$work/new_$r.csv" & pid_new=$!
  rc=0; wait "$pid_base" || rc=1; wait "$pid_new" || rc=1
  [ "$rc" = 0 ] || exit 1
done

"$python" - "$work" "$runs" "$base" "$new_label" "${OUT:-$root/benchmarks/results/compare_revisions.csv}" <<'EOF'
import sys
import pandas as pd

work, runs, base, new, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
frames = []
for which, label in (("base", base), ("new", new)):
    for r in range(1, runs + 1):
        frame = pd.read_csv(f"{work}/{which}_{r}.csv")
        frame["revision"], frame["round"] = label, r
        frames.append(frame)
data = pd.concat(frames)
data["extra_ops_noval"] = data["ops_pyro_noval"] - data["ops_torch"]
cols = ["torch_ms", "pyro_ms", "overhead_ms", "overhead_noval_ms", "ops_torch", "ops_pyro", "ops_pyro_noval",
        "extra_ops_noval", "host_reads_pyro", "host_reads_pyro_noval"]
table = data.groupby(["model", "revision"], sort=False)[cols].mean().reset_index()
table["rounds"] = runs
table.to_csv(out, index=False)
with pd.option_context("display.width", 200):
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
print(f"\nCSV: {out}")
EOF
