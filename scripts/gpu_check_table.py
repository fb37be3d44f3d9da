"""The table scripts/gpu-check.sh prints last, from its logs folder. Every section is
printed whatever failed: a step that failed, ran out of time or was skipped says so in its
row, with the end of its stderr.

Usage: gpu_check_table.py LOGS MODE SEED_TOKENS BUDGET_S
"""
import json, re, sys

logs, mode, seed_tokens, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])


def read(name):
    try:
        return open(f"{logs}/{name}").read()
    except OSError:
        return ""


steps = {}
for line in read("steps.tsv").splitlines():
    name, rc, secs, limit = line.split("\t")
    steps[name] = (rc, int(secs), int(limit))


def outcome(name):
    """'ok', or why the step gave no result, with the end of its stderr."""
    if name not in steps:
        return "not run"
    rc, secs, limit = steps[name]
    if rc == "0":
        return "ok"
    if rc == "skipped":
        return "skipped: the check's budget was spent"
    if rc == "not selected":
        return "not selected (ONLY)"
    why = {"124": f"timed out after {limit} s", "137": f"killed {limit} s + 10 s in"}.get(rc, f"failed (exit {rc})")
    tail = " | ".join(l.strip() for l in read(f"{name}.err").strip().splitlines()[-3:])
    return f"{why}: {tail[-300:]}" if tail else why


def result_line(name):
    """reference_gpt.py's RESULT line as a dict of its fields, or None."""
    m = re.search(r"^RESULT (.*)$", read(f"{name}.out"), re.M)
    if not m or steps.get(name, ("",))[0] != "0":
        return None
    fields = dict(kv.split("=", 1) for kv in m.group(1).split() if "=" in kv)
    fields["tok_s"] = float(fields.get("tok_s", "nan").replace(",", ""))
    return fields


def bench_json(name):
    if steps.get(name, ("",))[0] != "0":
        return None
    try:
        return json.loads(read(f"{name}.out"))
    except ValueError:
        return None


def gib(v):
    if v is None or v == "n/a":
        return "n/a"
    return f"{float(v):.2f}"


used = sum(s for _, s, _ in steps.values())
print(f"== gpu-check ({mode}); budget {budget} s, steps took {used} s")
print("== steps")
for name, (rc, secs, limit) in steps.items():
    print(f"{name:<24} {secs:>4} s  {outcome(name)}")

print("== doctor")
print(read("doctor.out").rstrip() if steps.get("doctor", ("",))[0] == "0" else outcome("doctor"))

print(f"== training throughput (same device, same call; batch of {seed_tokens:,} tokens)")
b = bench_json("bench")
eager, compiled = result_line("reference_eager"), result_line("reference_compiled")
if b:
    mfu = f"{100 * b['mfu']:.1f} %" if b.get("mfu") is not None else "n/a"
    print(f"stacklab bench      {b['tokens_per_s']:>12,.0f} tok/s  step {b['step_ms']:.1f} ms  "
          f"{b['model_tflops']:.3f} TFLOP/s  MFU {mfu}")
else:
    print("stacklab bench      " + outcome("bench"))
for label, r, name in (("pytorch eager", eager, "reference_eager"), ("pytorch compiled", compiled, "reference_compiled")):
    if r:
        print(f"{label:<19} {r['tok_s']:>12,.0f} tok/s  step {r.get('step_ms')} ms  "
              f"{r.get('tflops')} TFLOP/s  MFU {r.get('mfu_989', 'n/a')} of 989  warm-up {r.get('warmup_s')} s")
    else:
        print(f"{label:<19} {outcome(name)}")
for label, r in (("compiled", compiled), ("eager", eager)):
    if b and r:
        print(f"ratio stacklab / {label:<9} {b['tokens_per_s'] / r['tok_s']:.3f}")

print("== peak memory, GiB (NVML: the whole device in use; allocator: peak allocated, peak reserved)")
print(f"{'':<19} {'NVML':>8} {'allocated':>10} {'reserved':>9}")
p = bench_json("parts")
for label, j in (("stacklab bench", b), ("stacklab parts", p)):
    if j:
        row = f"{label:<19} {gib(j.get('nvml_memory_used_gib')):>8} {gib(j.get('max_memory_allocated_gib')):>10} {gib(j.get('max_memory_reserved_gib')):>9}"
        if j.get("nvml_memory_used_gib") is None:
            row += f"   (process RSS {gib(j.get('peak_memory_gib'))})"
        print(row)
    else:
        print(f"{label:<19} no result")
for label, r in (("pytorch eager", eager), ("pytorch compiled", compiled)):
    if r:
        print(f"{label:<19} {gib(r.get('nvml_used_gib')):>8} {gib(r.get('max_allocated_gib')):>10} {gib(r.get('max_reserved_gib')):>9}")
    else:
        print(f"{label:<19} no result")

print("== stages (stacklab bench --part)")
if p:
    for r in p["parts"]:
        tok = f"{r['tokens_per_s']:>12,.0f} tok/s" if r["tokens_per_s"] else " " * 18
        print(f"{r['part']:<11} {r['ms']:>9.2f} ms {tok}  {r['timed']}")
else:
    print(outcome("parts"))

print("== evaluation throughput (fp32; TF32 matmuls on CUDA)")
parts = {r["part"]: r for r in p["parts"]} if p else {}
for name in ("eval", "stack-eval"):
    if name in parts:
        print(f"stacklab {name:<14} {parts[name]['tokens_per_s']:>12,.0f} tok/s")
    else:
        print(f"stacklab {name:<14} no result")
ev_eager, ev_comp = result_line("reference_eval_eager"), result_line("reference_eval_compiled")
for label, r, name in (("pytorch eval eager", ev_eager, "reference_eval_eager"),
                       ("pytorch eval compiled", ev_comp, "reference_eval_compiled")):
    print(f"{label:<23} {r['tok_s']:>12,.0f} tok/s" if r else f"{label:<23} {outcome(name)}")
if "eval" in parts and ev_comp:
    print(f"ratio stacklab eval / compiled eval {parts['eval']['tokens_per_s'] / ev_comp['tok_s']:.3f}")
if "stack-eval" in parts:
    s = 10_485_760 / parts["stack-eval"]["tokens_per_s"]
    print(f"a two-model stack over the seed's 10,485,760 val tokens at this rate: {s:.1f} s")

print("== loss curve (first rows, then every validation)")
rows = []
for line in read("metrics.jsonl").splitlines():
    try:
        rows.append(json.loads(line))
    except ValueError:
        pass
if rows:
    for r in rows[:12] + [r for r in rows[12:] if "val_loss" in r]:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
else:
    print("training: " + (outcome("train") if outcome("train") != "ok" else "no metrics written"))

print("== data parallelism at world size 1 (c10d: NCCL on CUDA, Gloo on the CPU)")
world = read("dist-world.txt").strip()
print(outcome("dist") + (f": {world.split('|')[1].strip()}" if outcome("dist") == "ok" and "|" in world else ""))
overlap = read("dist-overlap.txt").strip()
if overlap:
    last = overlap.splitlines()[-1]
    print(last[last.index("all-reduce:"):])
