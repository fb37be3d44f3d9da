#!/usr/bin/env bash
# kill -9 a tiny training at N random moments and resume it after each, then check that
# nothing was lost: every checkpoint left loads, metrics.jsonl has exactly one row per step,
# and the run ends done. One of the kills lands inside a checkpoint write (the
# STACKLAB_FAULT_KILL_IN_CHECKPOINT hook); retention (checkpoint_keep_last = 2 with a
# checkpoint every 10 steps) deletes old checkpoints all the time, so random kills land in
# deletes too.
#
#   scripts/kill9.sh [N]          N kills (default 50); STEPS (default 10000); STACKLAB_BIN
#
# Prints one summary line and exits non-zero when anything was lost.
set -uo pipefail
N=${1:-50}
STEPS=${STEPS:-10000}
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${STACKLAB_BIN:-$root/target/release/stacklab}
[ -x "$BIN" ] || { echo "kill9.sh: no binary at $BIN (./lab.sh build, or set STACKLAB_BIN)" >&2; exit 2; }
work=$(mktemp -d /tmp/stacklab-kill9.XXXXXX)
trap 'rm -rf "$work"' EXIT
export STACKLAB_CHECKPOINT_DIR=$work/checkpoints
export STACKLAB_DATA_DIR=${STACKLAB_DATA_DIR:-$work/data}
cat > "$work/k9.toml" <<EOF
seed = 0
checkpoint_every = 10
checkpoint_keep_last = 2
log_every = 1

[model]
vocab_size = 4096
n_layer = 2
n_head = 2
n_embd = 64
seq_len = 32
norm_wte = "none"
norm_lm_head = "rms_norm"

[schedule]
steps = $STEPS
warmup = 0
warmdown = $((STEPS / 3))

[batch]
global_batch = 8
micro_batch = 4
ranks = 1

[data]
embedded = true
train = ""
val = ""

[eval]
val_tokens = 1024
val_every = 100
EOF
"$BIN" data embedded >/dev/null 2>&1 || { echo "kill9.sh: cannot prepare the embedded corpus" >&2; exit 2; }
run=$STACKLAB_CHECKPOINT_DIR/k9
state() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("state",""))' "$run/status.json" 2>/dev/null; }
start() { # $1: extra environment for this start (or empty)
  if [ -f "$run/status.json" ]; then
    env $1 "$BIN" train --resume "$run" --device cpu >>"$work/train.log" 2>&1 &
  else
    env $1 "$BIN" train --config "$work/k9.toml" --name k9 --device cpu >>"$work/train.log" 2>&1 &
  fi
  pid=$!
}
kills=0; in_checkpoint=0
fault_at=$(( (N / 2) ))
for i in $(seq 1 "$N"); do
  [ "$(state)" = done ] && break
  extra=""
  if [ "$i" -eq "$fault_at" ]; then
    # The next checkpoint after the current step, killed between its weights and metadata.
    last=$(ls -d "$run"/step_* 2>/dev/null | sort | tail -1 | sed 's/.*step_0*//')
    extra="STACKLAB_FAULT_KILL_IN_CHECKPOINT=$(( ${last:-0} + 10 ))"
    in_checkpoint=1
  fi
  start "$extra"
  if [ -n "$extra" ]; then
    wait "$pid" 2>/dev/null
  else
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.3, 2.5), 2))')"
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  kills=$((kills + 1))
done
# Finish the run.
for _ in 1 2 3; do
  [ "$(state)" = done ] && break
  start ""
  wait "$pid"
done
unreadable=0; checked=0
for ck in "$run"/step_*; do
  [ -d "$ck" ] || continue
  checked=$((checked + 1))
  "$BIN" eval --checkpoint "$ck" --tokens 256 --device cpu --json >/dev/null 2>&1 || { unreadable=$((unreadable + 1)); echo "unreadable: $ck"; }
done
read -r rows distinct dup missing <<<"$(python3 - "$run/metrics.jsonl" "$STEPS" <<'PY'
import json, sys, collections
steps = int(sys.argv[2])
c = collections.Counter()
for line in open(sys.argv[1]):
    line = line.strip()
    if line:
        c[json.loads(line)["step"]] += 1
train = {s: n for s, n in c.items() if s >= 1}
print(sum(train.values()), len(train), sum(1 for n in train.values() if n > 1),
      sum(1 for s in range(1, steps + 1) if s not in train))
PY
)"
final=$(state)
echo "kill9: $kills kills ($in_checkpoint inside a checkpoint write), final state $final, $checked checkpoints left, $unreadable unreadable, $rows step rows for $STEPS steps ($distinct distinct, $dup duplicated, $missing missing)"
[ "$final" = done ] && [ "$unreadable" -eq 0 ] && [ "$dup" -eq 0 ] && [ "$missing" -eq 0 ]
