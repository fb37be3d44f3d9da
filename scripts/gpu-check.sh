#!/usr/bin/env bash
# The GPU checks in one call, for a machine without a Rust toolchain: build here
# (./lab.sh build), then run this there with target/release/stacklab carried along (the
# PyTorch baseline is scripts/reference_gpt.py, in the checkout). Logs go to $OUT (or
# ./out/gpu-check); a table of the figures is printed last. About 5 minutes on an H200 with
# the defaults (torch.compile's warm-up included), inside the 15 minutes a session has.
#
#   1. stacklab doctor
#   2. training throughput on this card in this call, gpt2-small-seed at batch 64 x 1024:
#      stacklab bench, reference_gpt.py eager and --compile; the ratio stacklab / compiled
#   3. the cost of each stage: stacklab bench --part forward,head,backward,muon,adamw,eval,stack-eval
#   4. evaluation throughput: stacklab's eval part beside reference_gpt.py --eval eager and
#      --compile (fp32 with TF32 matmuls, the seed's validation numerics)
#   5. the seed recipe (12 x 768, vocab 50304, 8 x 64 accumulation) for STEPS steps (default
#      40) on the embedded corpus (ids < 4096 fit the 50304 vocabulary), validating on
#      VAL_TOKENS tokens (default 262,144) every VAL_EVERY steps (default 20)
set -u
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-$root/out/gpu-check}
steps=${STEPS:-40}
val_tokens=${VAL_TOKENS:-262144}
val_every=${VAL_EVERY:-20}
mkdir -p "$out"
torch_lib=$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export STACKLAB_DATA_DIR=/tmp/stacklab-data STACKLAB_CHECKPOINT_DIR=/tmp/stacklab-runs
bin=$root/target/release/stacklab
ref=$root/scripts/reference_gpt.py

$bin doctor > "$out/doctor.txt" 2>&1
$bin bench --config gpt2-small-seed --json > "$out/bench.json" 2> "$out/bench.err"
python3 "$ref" > "$out/reference_eager.txt" 2>&1
python3 "$ref" --compile > "$out/reference_compiled.txt" 2>&1
$bin bench --config gpt2-small-seed --steps 10 --warmup 3 --json \
  --part forward,head,backward,muon,adamw,eval,stack-eval > "$out/parts.json" 2> "$out/parts.err"
python3 "$ref" --eval > "$out/reference_eval_eager.txt" 2>&1
python3 "$ref" --eval --compile > "$out/reference_eval_compiled.txt" 2>&1
$bin train --config gpt2-small-seed --name seed-gpu \
  --set data.embedded=true --set 'data.train=""' --set 'data.val=""' \
  --set schedule.steps="$steps" --set schedule.warmdown=$((steps * 3 / 10)) \
  --set eval.val_every="$val_every" --set eval.val_tokens="$val_tokens" --set checkpoint_every=0 \
  > "$out/train.txt" 2>&1
cp /tmp/stacklab-runs/seed-gpu/metrics.jsonl "$out/" 2>/dev/null

echo "== doctor"; cat "$out/doctor.txt"
python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]

def reference(name):
    txt = open(f"{out}/reference_{name}.txt").read()
    m = re.search(r"RESULT .*", txt)
    tok = re.search(r"tok_s=([\d,]+)", m.group(0)) if m else None
    return (float(tok.group(1).replace(",", "")) if tok else None), (m.group(0) if m else "failed: " + txt[-300:])

def load(name):
    try:
        return json.load(open(f"{out}/{name}.json")), None
    except Exception as e:
        return None, f"failed: {e} {open(f'{out}/{name}.err').read()[-400:]}"

print("== training throughput (same card, same call; gpt2-small-seed, batch 64 x 1024)")
b, err = load("bench")
eager, eager_line = reference("eager")
compiled, compiled_line = reference("compiled")
if b:
    print(f"stacklab bench      {b['tokens_per_s']:>10,.0f} tok/s  step {b['step_ms']:.1f} ms  "
          f"{b['model_tflops']:.0f} TFLOP/s  MFU {100 * (b['mfu'] or 0):.1f} %  mem {b['peak_memory_gib']} GiB")
else:
    print("stacklab bench      " + err)
print(f"pytorch eager       {eager_line}")
print(f"pytorch compiled    {compiled_line}")
if b and compiled:
    print(f"ratio stacklab / compiled {b['tokens_per_s'] / compiled:.3f}")
if b and eager:
    print(f"ratio stacklab / eager    {b['tokens_per_s'] / eager:.3f}")

print("== stages (stacklab bench --part)")
p, err = load("parts")
if p:
    for r in p["parts"]:
        tok = f"{r['tokens_per_s']:>12,.0f} tok/s" if r["tokens_per_s"] else " " * 18
        print(f"{r['part']:<11} {r['ms']:>9.2f} ms {tok}  {r['timed']}")
    print(f"peak memory {p['peak_memory_gib']} GiB")
else:
    print(err)

print("== evaluation throughput (fp32, TF32 matmuls, batch 64 x 1024)")
ev_eager, ev_eager_line = reference("eval_eager")
ev_comp, ev_comp_line = reference("eval_compiled")
parts = {r["part"]: r for r in p["parts"]} if p else {}
for name in ("eval", "stack-eval"):
    if name in parts:
        print(f"stacklab {name:<10} {parts[name]['tokens_per_s']:>10,.0f} tok/s")
print(f"pytorch eval eager  {ev_eager_line}")
print(f"pytorch eval compiled {ev_comp_line}")
if "eval" in parts and ev_comp:
    print(f"ratio stacklab eval / compiled eval {parts['eval']['tokens_per_s'] / ev_comp:.3f}")
if "stack-eval" in parts:
    s = 10_485_760 / parts["stack-eval"]["tokens_per_s"]
    print(f"a two-model stack over the seed's 10,485,760 val tokens at this rate: {s:.1f} s")

print("== loss curve (first rows, then every validation)")
try:
    rows = [json.loads(l) for l in open(f"{out}/metrics.jsonl")]
    for r in rows[:12] + [r for r in rows if "val_loss" in r]:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
except Exception as e:
    print("training failed:", e, open(f"{out}/train.txt").read()[-600:])
PY
