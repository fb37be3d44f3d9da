#!/usr/bin/env bash
# The GPU checks in one call, for a machine without a Rust toolchain. Build the small
# binary here (`./lab.sh cargo build --profile gpu`: target/gpu/stacklab, without line
# tables), carry it along, and run this there; the PyTorch baseline is
# scripts/reference_gpt.py, in the checkout. Each step runs under its own time limit
# inside the check's budget (BUDGET_S, default 540 s: a device call runs at most 600 s),
# and the table is printed last even when a step failed or ran out of time. Logs stay
# outside $OUT: $OUT (default ./out/gpu-check) gets summary.txt (the table) and
# gpu-check-logs.tar.gz (every log, the run's metrics). Every run works in a fresh
# temporary folder, so a rerun on a warm machine starts clean.
#
#   1. stacklab doctor
#   2. training throughput on this card in this call, gpt2-small-seed at batch 64 x 1024:
#      stacklab bench, reference_gpt.py eager and --compile; the ratio stacklab / compiled;
#      peak memory on both sides as NVML's whole-device use and the allocator's peak
#   3. the cost of each stage: stacklab bench --part forward,head,backward,muon,adamw,eval,stack-eval
#   4. evaluation throughput: stacklab's eval part beside reference_gpt.py --eval eager and
#      --compile (fp32 with TF32 matmuls, the seed's validation numerics)
#   5. the seed recipe (12 x 768, vocab 50304, 8 x 64 accumulation) for STEPS steps (default
#      40) on the embedded corpus (ids < 4096 fit the 50304 vocabulary), validating on
#      VAL_TOKENS tokens every VAL_EVERY steps (default 20). The embedded val split holds
#      164,864 tokens read 64 x 1024 at a time: VAL_TOKENS defaults to 131,072.
#   6. data parallelism at world size 1: 2 steps of the same training launched as torchrun
#      would (RANK=0, WORLD_SIZE=1), so it runs through c10d's NCCL backend on the GPU, its
#      gradient buckets started by the autograd hooks on the device's backward thread
#      (Gloo on the CPU): the process group forms, the collectives run, the run ends done.
#
# GPU_CHECK_CPU=1 runs the same steps on the CPU at a tiny shape (configs/tiny.toml with 2
# layers, batch 4 x 128; the reference at the same shape in fp32): the same table, in one
# to three minutes on 2 cores (mostly torch.compile's C++ builds). It is how the script
# itself is tested (tests/gpu_check.rs).
#
# Environment: STACKLAB_BIN (the binary; default target/gpu/stacklab, else
# target/release/stacklab), PYTHON (default python3, with torch), OUT, BUDGET_S, STEPS,
# VAL_TOKENS, VAL_EVERY, ONLY (steps to run, comma-separated, e.g. ONLY=bench,train for a
# second call; the others are listed as not selected), KEEP_WORK=1 (keep the temporary
# folder; its path is printed).
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
cpu=${GPU_CHECK_CPU:-0}
python=${PYTHON:-python3}
out=${OUT:-$root/out/gpu-check}
budget=${BUDGET_S:-540}
bin=${STACKLAB_BIN:-}
if [ -z "$bin" ]; then
  for candidate in "$root/target/gpu/stacklab" "$root/target/release/stacklab"; do
    if [ -x "$candidate" ]; then bin=$candidate; break; fi
  done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "gpu-check.sh: no stacklab binary (${bin:-none found}): build one (./lab.sh cargo build --profile gpu) or set STACKLAB_BIN" >&2
  exit 2
fi
command -v timeout >/dev/null 2>&1 || { echo "gpu-check.sh: coreutils' timeout is missing" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/stacklab-gpu-check.XXXXXX") || exit 2
logs=$work/logs
mkdir -p "$logs" "$out"
rm -f "$out/summary.txt" "$out/gpu-check-logs.tar.gz"
export STACKLAB_DATA_DIR=${STACKLAB_DATA_DIR:-$work/data} STACKLAB_CHECKPOINT_DIR=$work/runs
export PYTHONUNBUFFERED=1
if [ "$cpu" = 1 ]; then
  mode="CPU mode: configs/tiny.toml with 2 layers, batch 4 x 128, fp32"
  steps=${STEPS:-4}
  val_tokens=${VAL_TOKENS:-4096}
  val_every=${VAL_EVERY:-2}
  device=(--device cpu)
  shape=(--config tiny --set model.n_layer=2 --batch 4)
  train_shape=(--config tiny --set model.n_layer=2 --set batch.micro_batch=4 --set batch.global_batch=8)
  ref_shape=(--device cpu --fp32 --layers 2 --width 128 --heads 4 --vocab 4096 --seq 128 --batch 4)
  bench_steps=(--steps 2 --warmup 1)
  part_steps=(--steps 2 --warmup 1)
  ref_steps=(--steps 2 --warmup 1)
  seed_tokens=$((4 * 128))
  # Limits (s): doctor, bench, reference, compiled reference, parts, train, dist.
  limits=(60 60 60 240 90 120 60)
else
  mode="GPU mode: gpt2-small-seed at batch 64 x 1024"
  steps=${STEPS:-40}
  val_tokens=${VAL_TOKENS:-131072}
  val_every=${VAL_EVERY:-20}
  device=()
  shape=(--config gpt2-small-seed)
  train_shape=(--config gpt2-small-seed)
  ref_shape=()
  bench_steps=()
  part_steps=(--steps 10 --warmup 3)
  ref_steps=()
  seed_tokens=$((64 * 1024))
  limits=(60 150 120 180 150 300 90)
fi
# The binary's rpath points at the libtorch it was built against; elsewhere, Python's torch.
torch_lib=$("$python" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)
[ -n "$torch_lib" ] && export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ref=$root/scripts/reference_gpt.py
status=$logs/steps.tsv
: > "$status"
started=$SECONDS
# Seconds kept back for the table and the archive.
reserve=20

# step NAME LIMIT COMMAND...: runs COMMAND with stdout to NAME.out and stderr to NAME.err,
# for at most LIMIT seconds or what is left of the budget, and records how it ended.
step() {
  local name=$1 limit=$2
  shift 2
  if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then
    printf '%s\tnot selected\t0\t0\n' "$name" >> "$status"
    return
  fi
  local left=$((budget - (SECONDS - started) - reserve))
  if [ "$left" -lt 5 ]; then
    printf '%s\tskipped\t0\t0\n' "$name" >> "$status"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "gpu-check: $name (at most ${limit}s)" >&2
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$logs/$name.out" 2> "$logs/$name.err"
  printf '%s\t%s\t%s\t%s\n' "$name" "$?" "$((SECONDS - t0))" "$limit" >> "$status"
}

step doctor "${limits[0]}" "$bin" doctor
step bench "${limits[1]}" "$bin" bench "${shape[@]}" "${device[@]}" "${bench_steps[@]}" --json
step reference_eager "${limits[2]}" "$python" "$ref" "${ref_shape[@]}" "${ref_steps[@]}"
step reference_compiled "${limits[3]}" "$python" "$ref" "${ref_shape[@]}" "${ref_steps[@]}" --compile
step parts "${limits[4]}" "$bin" bench "${shape[@]}" "${device[@]}" "${part_steps[@]}" --json \
  --part forward,head,backward,muon,adamw,eval,stack-eval
step reference_eval_eager "${limits[2]}" "$python" "$ref" "${ref_shape[@]}" "${ref_steps[@]}" --eval
step reference_eval_compiled "${limits[3]}" "$python" "$ref" "${ref_shape[@]}" "${ref_steps[@]}" --eval --compile
step train "${limits[5]}" "$bin" train "${train_shape[@]}" "${device[@]}" --name gpu-check \
  --set data.embedded=true --set 'data.train=""' --set 'data.val=""' \
  --set schedule.steps="$steps" --set schedule.warmdown=$((steps * 3 / 10)) \
  --set eval.val_every="$val_every" --set eval.val_tokens="$val_tokens" --set checkpoint_every=0
cp "$STACKLAB_CHECKPOINT_DIR/gpu-check/metrics.jsonl" "$logs/" 2>/dev/null
dist_port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step dist "${limits[6]}" env RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 \
  MASTER_PORT="$dist_port" "$bin" train "${train_shape[@]}" "${device[@]}" --name gpu-check-dist \
  --set data.embedded=true --set 'data.train=""' --set 'data.val=""' \
  --set schedule.steps=2 --set schedule.warmdown=0 --set eval.val_every=0 \
  --set eval.val_tokens="$val_tokens" --set checkpoint_every=0 --dist-timeout 120
grep -h "rank 0 of 1" "$STACKLAB_CHECKPOINT_DIR/gpu-check-dist/train.log" > "$logs/dist-world.txt" 2>/dev/null
grep -h "all-reduce:" "$STACKLAB_CHECKPOINT_DIR/gpu-check-dist/train.log" > "$logs/dist-overlap.txt" 2>/dev/null

"$python" "$root/scripts/gpu_check_table.py" "$logs" "$mode" "$seed_tokens" "$budget" \
  > "$logs/summary.txt" 2> "$logs/summary.err" \
  || { echo "the table could not be made:"; cat "$logs/summary.err"; } >> "$logs/summary.txt"
cp "$logs/summary.txt" "$out/summary.txt"
tar -czf "$out/gpu-check-logs.tar.gz" -C "$work" logs
cat "$out/summary.txt"
failed=$(awk -F'\t' '$2 != "0" && $2 != "not selected"' "$status" | wc -l)
if [ "${KEEP_WORK:-0}" = 1 ]; then
  echo "gpu-check: work folder kept: $work" >&2
else
  rm -rf "$work"
fi
# Exit status: 0 when every selected step succeeded, 1 when one failed, timed out or was
# skipped for want of time.
[ "$failed" -eq 0 ]
