#!/usr/bin/env bash
# The GPU checks in one call, for a machine without a Rust toolchain: build here
# (./lab.sh build), copy the PyTorch baseline to out/reference_gpt.py, then run this there
# with target/release/stacklab and out/reference_gpt.py carried along. Logs go to $OUT
# (or ./out/gpu-check); a table of the figures is printed last.
#
#   1. stacklab doctor
#   2. stacklab bench (gpt2-small-seed, batch 64 x 1024) beside reference_gpt.py eager and
#      --compile, all on this card in this call
#   3. the seed recipe (12 x 768, vocab 50304, 8 x 64 accumulation) for STEPS steps on the
#      embedded corpus (ids < 4096 fit the 50304 vocabulary), validating every 50 steps
set -u
out=${OUT:-out/gpu-check}
steps=${STEPS:-300}
mkdir -p "$out"
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export STACKLAB_DATA_DIR=/tmp/stacklab-data STACKLAB_CHECKPOINT_DIR=/tmp/stacklab-runs
bin=target/release/stacklab

$bin doctor > "$out/doctor.txt" 2>&1
$bin bench --config gpt2-small-seed --json > "$out/bench.json" 2> "$out/bench.err"
python3 out/reference_gpt.py > "$out/reference_eager.txt" 2>&1
python3 out/reference_gpt.py --compile > "$out/reference_compiled.txt" 2>&1
$bin train --config gpt2-small-seed --name seed-gpu \
  --set data.embedded=true --set 'data.train=""' --set 'data.val=""' \
  --set schedule.steps="$steps" --set schedule.warmdown=$((steps * 3 / 10)) \
  --set eval.val_every=50 --set eval.val_tokens=1048576 --set checkpoint_every=0 \
  > "$out/train.txt" 2>&1
cp /tmp/stacklab-runs/seed-gpu/metrics.jsonl "$out/" 2>/dev/null

echo "== doctor"; cat "$out/doctor.txt"
echo "== throughput (same card, same call)"
python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
try:
    b = json.load(open(f"{out}/bench.json"))
    print(f"stacklab bench      {b['tokens_per_s']:>10,.0f} tok/s  step {b['step_ms']:.1f} ms  "
          f"{b['model_tflops']:.0f} TFLOP/s  MFU {100 * (b['mfu'] or 0):.1f} %  mem {b['peak_memory_gib']} GiB")
except Exception as e:
    print("stacklab bench      failed:", e, open(f"{out}/bench.err").read()[-400:])
for name in ("eager", "compiled"):
    txt = open(f"{out}/reference_{name}.txt").read()
    m = re.search(r"RESULT .*", txt)
    print(f"pytorch {name:<11} {m.group(0) if m else 'failed: ' + txt[-300:]}")
print("== loss curve (first rows)")
try:
    rows = [json.loads(l) for l in open(f"{out}/metrics.jsonl")]
    for r in rows[:12] + [r for r in rows if "val_loss" in r]:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
except Exception as e:
    print("training failed:", e, open(f"{out}/train.txt").read()[-600:])
PY
