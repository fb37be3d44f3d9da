#!/usr/bin/env bash
# Fuzzes stacklab's parsers with cargo-fuzz (libFuzzer, AddressSanitizer, overflow checks):
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 60); TARGETs default to all of them:
#   shard_header checkpoint_load config_toml stack_spec seed_results_csv progress_lines stacks_csv
#
# Needs nightly Rust and `cargo install cargo-fuzz`. Seeds each corpus (fuzz/corpus/<target>)
# from real files, runs each target, and prints a table: executions, new corpus entries and
# crashes. A crash is saved under fuzz/artifacts/<target>/; turn it into a test in
# tests/fuzz_regressions.rs (the normal suite, on stable) before fixing it. Exit status 1 when
# any target crashed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
secs=${1:-60}
shift || true
all=(shard_header checkpoint_load config_toml stack_spec seed_results_csv progress_lines stacks_csv)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

command -v cargo-fuzz >/dev/null 2>&1 || { echo "fuzz.sh: cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 2; }
rustup run nightly rustc --version >/dev/null 2>&1 || { echo "fuzz.sh: nightly Rust is missing: rustup toolchain install nightly" >&2; exit 2; }

cd "$root"
echo "fuzz.sh: building the fuzz targets (nightly, AddressSanitizer)" >&2
./lab.sh cargo +nightly fuzz build -O >&2
bin=$root/fuzz/target/x86_64-unknown-linux-gnu/release
# The parsers read files: keep them in memory.
export TMPDIR=${TMPDIR:-/dev/shm}
[ -d "$TMPDIR" ] && [ -w "$TMPDIR" ] || export TMPDIR=/tmp
"$bin/make_seeds"

logs=$root/fuzz/logs
mkdir -p "$logs"
failed=0
printf '%-18s %8s %12s %10s %8s %8s\n' target seconds executions exec/s corpus+ crashes
for t in "${targets[@]}"; do
  [ -x "$bin/$t" ] || { echo "fuzz.sh: no target $t (known: ${all[*]})" >&2; exit 2; }
  mkdir -p "fuzz/artifacts/$t" "fuzz/corpus/$t"
  before=$(ls "fuzz/corpus/$t" | wc -l)
  crashes_before=$(ls "fuzz/artifacts/$t" | wc -l)
  set +e
  "$bin/$t" "fuzz/corpus/$t" -max_total_time="$secs" -rss_limit_mb=4096 -max_len=65536 \
    -timeout=20 -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" \
    >"$logs/$t.log" 2>&1
  rc=$?
  set -e
  after=$(ls "fuzz/corpus/$t" | wc -l)
  crashes=$(( $(ls "fuzz/artifacts/$t" | wc -l) - crashes_before ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  printf '%-18s %8s %12s %10s %8s %8s\n' "$t" "$secs" "$execs" "$rate" "$((after - before))" "$crashes"
  if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    failed=1
    echo "fuzz.sh: $t stopped with status $rc; see $logs/$t.log and fuzz/artifacts/$t/" >&2
  fi
done
exit $failed
