#!/usr/bin/env bash
# stacklab beside PyTorch eager fp32 on this CPU, at the same shape, in one run: REPS
# repetitions, each timing training (a full step: forward, backward, AdamW + Muon) and
# evaluation (no-grad forward and loss) three ways:
#   pytorch    scripts/reference_gpt.py --fp32 as users run it (libgomp's defaults)
#   pytorch=rt the same with stacklab's CPU runtime settings (GOMP_SPINCOUNT=10000, malloc
#              thresholds via GLIBC_TUNABLES): what stacklab's code alone gains
#   stacklab   `stacklab bench` / `stacklab bench --part eval`
# The order rotates between repetitions; the table gives every run's tokens/s, the ratios of
# each repetition (runs next to each other) and their medians.
#
#   scripts/bench-cpu.sh                     configs/tiny.toml's shape, 3 repetitions
#   REPS=5 STEPS=20 scripts/bench-cpu.sh
#   SHAPE=anchor scripts/bench-cpu.sh        4 x 256, 4 heads, vocab 4096, seq 256, batch 8
#   BIN=path/to/stacklab scripts/bench-cpu.sh   another build
#
# Needs the release binary (./lab.sh build) and the venv's torch (STACKLAB_VENV or ./.venv).
# All use their default CPU threads. Logs go to $OUT (default out/bench-cpu).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${STACKLAB_VENV:-$root/.venv}
py=$venv/bin/python
bin=${BIN:-$root/target/release/stacklab}
reps=${REPS:-3}
steps=${STEPS:-10}
warmup=${WARMUP:-3}
out=${OUT:-$root/out/bench-cpu}

case "${SHAPE:-tiny}" in
  tiny) layers=4 width=128 heads=4 vocab=4096 seq=128 batch=16 shape="configs/tiny.toml" ;;
  anchor) layers=4 width=256 heads=4 vocab=4096 seq=256 batch=8 shape="the README's CPU anchor" ;;
  *) echo "bench-cpu.sh: SHAPE must be tiny or anchor, not '$SHAPE'" >&2; exit 2 ;;
esac
[ -x "$bin" ] || { echo "bench-cpu.sh: $bin is missing: run ./lab.sh build first" >&2; exit 2; }
[ -x "$py" ] || { echo "bench-cpu.sh: $py is missing: set STACKLAB_VENV to the venv with torch" >&2; exit 2; }
mkdir -p "$out"

ref=("$py" "$root/scripts/reference_gpt.py" --device cpu --fp32 --layers "$layers" --width "$width"
  --heads "$heads" --vocab "$vocab" --seq "$seq" --batch "$batch" --steps "$steps" --warmup "$warmup")
lab=("$bin" bench --config tiny --device cpu --json --batch "$batch" --steps "$steps" --warmup "$warmup"
  --set "model.n_layer=$layers" --set "model.n_embd=$width" --set "model.n_head=$heads"
  --set "model.vocab_size=$vocab" --set "model.seq_len=$seq")
# stacklab's runtime settings (src/device/cpu.rs), given to PyTorch through the environment.
rt=(env GOMP_SPINCOUNT=10000
  GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=2147483647)

run() { # name rep command...
  local name=$1 rep=$2
  shift 2
  "$@" > "$out/$name.$rep.txt" 2> "$out/$name.$rep.err" \
    || { echo "bench-cpu.sh: $name (repetition $rep) failed:" >&2; tail -5 "$out/$name.$rep.err" >&2; exit 1; }
}

cat /proc/loadavg > "$out/loadavg.before"
for rep in $(seq 1 "$reps"); do
  echo "repetition $rep/$reps ..." >&2
  for what in train eval; do
    py_args=(); lab_args=()
    [ "$what" = eval ] && { py_args=(--eval); lab_args=(--part eval); }
    runs=("pytorch" "pytorch-rt" "stacklab")
    # Rotate who goes first, so no side always runs on a cooler or warmer machine.
    for k in 0 1 2; do
      who=${runs[$(( (k + rep) % 3 ))]}
      case $who in
        pytorch) run "pytorch-$what" "$rep" "${ref[@]}" "${py_args[@]}" ;;
        pytorch-rt) run "pytorch-rt-$what" "$rep" "${rt[@]}" "${ref[@]}" "${py_args[@]}" ;;
        stacklab) run "stacklab-$what" "$rep" "${lab[@]}" "${lab_args[@]}" ;;
      esac
    done
  done
done
cat /proc/loadavg > "$out/loadavg.after"

"$py" - "$out" "$reps" "$shape" "$layers" "$width" "$heads" "$vocab" "$seq" "$batch" "$steps" "$warmup" <<'PY'
import json, re, statistics, sys
out, reps, shape = sys.argv[1], int(sys.argv[2]), sys.argv[3]
layers, width, heads, vocab, seq, batch, steps, warmup = sys.argv[4:]

def pytorch(name, rep):
    txt = open(f"{out}/{name}.{rep}.txt").read()
    m = re.search(r"RESULT .*threads=(\d+).* tok_s=([\d,]+)", txt)
    return float(m.group(2).replace(",", "")), m.group(1)

def stacklab(name, rep):
    v = json.loads(open(f"{out}/{name}.{rep}.txt").read())
    threads = re.search(r"\((\d+) threads?\)", v["device"]).group(1)
    if "parts" in v:
        return v["parts"][0]["tokens_per_s"], threads
    return v["tokens_per_s"], threads

load = open(f"{out}/loadavg.before").read().split()[:3], open(f"{out}/loadavg.after").read().split()[:3]
policy = json.load(open(f"{out}/stacklab-train.1.txt")).get("cpu_wait_policy", "not reported")
print(f"shape: {shape}: {layers} layers, width {width}, {heads} heads, vocab {vocab}, seq {seq}, "
      f"batch {batch}; fp32; {steps} timed steps after {warmup} warm-up; {reps} repetitions")
print(f"pytorch: libgomp's defaults; pytorch=rt: stacklab's runtime settings (GOMP_SPINCOUNT=10000, "
      f"malloc thresholds); stacklab: {policy}")
print(f"load average (1, 5, 15 min) before {' '.join(load[0])}, after {' '.join(load[1])}")
cols = "".join(f"{'rep ' + str(r):>10}" for r in range(1, reps + 1))
print(f"{'':<10}{'':<12}{cols}{'median':>10}")
fmt = lambda xs: "".join(f"{x:>10,.0f}" for x in xs)
summary = []
for what in ("train", "eval"):
    rows = {
        "pytorch": [pytorch(f"pytorch-{what}", r) for r in range(1, reps + 1)],
        "pytorch=rt": [pytorch(f"pytorch-rt-{what}", r) for r in range(1, reps + 1)],
        "stacklab": [stacklab(f"stacklab-{what}", r) for r in range(1, reps + 1)],
    }
    for k, (name, xs) in enumerate(rows.items()):
        print(f"{what if k == 0 else '':<10}{name:<12}{fmt(x for x, _ in xs)}"
              f"{statistics.median(x for x, _ in xs):>10,.0f}  tok/s ({xs[0][1]} threads)")
    for base in ("pytorch", "pytorch=rt"):
        ratios = [s[0] / p[0] for p, s in zip(rows[base], rows["stacklab"])]
        print(f"{'':<10}{'ratio':<12}{''.join(f'{r:>10.2f}' for r in ratios)}"
              f"{statistics.median(ratios):>10.2f}  stacklab / {base}")
        summary.append(f"{what} {statistics.median(ratios):.2f}x vs {base}")
print("median ratios, stacklab / pytorch eager fp32: " + ", ".join(summary))
PY
