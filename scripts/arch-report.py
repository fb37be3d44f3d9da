#!/usr/bin/env python3
"""The architecture's figures for src/: long functions, process spawns, untyped JSON reads,
imports against the layering, and module cycles. `scripts/arch-report.py [--list]`.

Layering (a module imports only modules on its own level or below; within a level, no
cycles):
    main, cli                       the binary's commands: parse flags, print
    tui                             the lab
    sweep, heal                     sweeps, heal experiments (they start children through jobs)
    runs, jobs, train, stack, inspect, eval, bench, export, doctor
                                    run folders and the queue, requests to child processes,
                                    the use cases
    data, model, config, device, dist
                                    the core (dist: c10d process groups)
    paths, hash, filelock, progress helpers
"""
import re
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
# `--src DIR`: another tree's src/ (e.g. an older commit's, to compare).
if "--src" in sys.argv:
    SRC = Path(sys.argv[sys.argv.index("--src") + 1]).resolve()
LEVEL = {
    "main": 8, "cli": 8, "tui": 7, "sweep": 6, "heal": 6,
    "runs": 3, "jobs": 3, "stack": 3, "inspect": 3, "eval": 3, "bench": 3, "export": 3,
    "train": 3, "doctor": 3,
    "data": 2, "model": 2, "config": 2, "device": 2, "dist": 2, "system": 2,
    "paths": 1, "hash": 1, "filelock": 1, "progress": 1, "lib": 9,
}


def module_of(path):
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def strip_tests(text):
    """Drops `#[cfg(test)] mod tests { ... }` blocks (tests may import anything)."""
    out, skip, depth = [], False, 0
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == "#[cfg(test)]" and i + 1 < len(lines) and re.match(r"\s*mod \w+ \{", lines[i + 1]):
            indent = len(lines[i + 1]) - len(lines[i + 1].lstrip())
            j = i + 2
            while j < len(lines) and lines[j] != " " * indent + "}":
                j += 1
            i = j + 1
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def long_functions(files, limit=80):
    found = []
    for f in files:
        lines = strip_tests(f.read_text()).split("\n")
        for i, line in enumerate(lines):
            m = re.match(r"^(\s*)(pub(\([a-z]+\))? )?(async )?(unsafe )?fn (\w+)", line)
            if not m:
                continue
            indent = m.group(1)
            j = i
            while j < len(lines) and not lines[j].rstrip().endswith("{") and not lines[j].rstrip().endswith(";"):
                j += 1
            if j >= len(lines) or lines[j].rstrip().endswith(";"):
                continue
            k = j + 1
            while k < len(lines) and lines[k] != indent + "}":
                k += 1
            n = k - i + 1
            if n > limit:
                found.append((n, f"{'::'.join(module_of(f))}::{m.group(6)}", f.relative_to(SRC.parent)))
    return sorted(found, reverse=True)


def imports(files):
    """Edges module -> module from `crate::` and `super::` paths (outside tests)."""
    mods = {tuple(module_of(f)) for f in files}
    edges = defaultdict(set)
    for f in files:
        me = tuple(module_of(f))
        text = strip_tests(f.read_text())
        text = re.sub(r"//.*", "", text)
        here = me if f.name == "mod.rs" or f.name == "lib.rs" else me[:-1]
        for m in re.finditer(r"\b(crate|super)((?:::\w+)+)", text):
            base = () if m.group(1) == "crate" else here[:-1] if f.name != "mod.rs" else here[:-1]
            if m.group(1) == "super":
                base = me[:-1]
            path = list(base) + m.group(2).strip(":").split("::")
            # The longest prefix that is a module file.
            for n in range(len(path), 0, -1):
                if tuple(path[:n]) in mods:
                    target = tuple(path[:n])
                    if target != me and me[: len(target)] != target:
                        edges[me].add(target)
                    break
        # `use` groups: crate::x::{a, b::c}
        for m in re.finditer(r"use crate::(\w+)::\{([^}]*)\}", text):
            for item in m.group(2).split(","):
                item = item.strip().split("::")[0]
                t = (m.group(1), item)
                if t in mods and t != me:
                    edges[me].add(t)
    return mods, edges


def upward(edges):
    bad = []
    for a, targets in edges.items():
        for b in targets:
            la, lb = LEVEL.get(a[0], 0), LEVEL.get(b[0], 0)
            if a[0] != b[0] and lb > la:
                bad.append(("::".join(a), "::".join(b)))
    return sorted(set(bad))


def cycles(mods, edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted("::".join(c) for c in comp))

    for v in sorted(mods):
        if v not in index:
            visit(v)
    return out


def main():
    # `tests.rs` files are test modules kept beside the code (tests may be long).
    files = sorted(p for p in SRC.rglob("*.rs") if p.name != "tests.rs")
    listing = "--list" in sys.argv
    longs = long_functions(files)
    text = {f: strip_tests(f.read_text()) for f in files}
    spawns = [(f, l) for f in files for l in text[f].split("\n") if "Command::new(" in l]
    exes = [(f, l) for f in files for l in text[f].split("\n") if "current_exe()" in l]
    json_re = re.compile(r'\[\s*"[a-z_]+"\s*\]\s*\.as_|\.get\("[a-z_]+"\)\s*\.and_then\(\|\w+\|\s*\w+\.as_|\.get\("[a-z_]+"\)\s*\.and_then\(serde_json::Value::as_')
    untyped = [(f, l) for f in files for l in text[f].split("\n") if json_re.search(l)]
    mods, edges = imports(files)
    up = upward(edges)
    cyc = cycles(mods, edges)
    print(f"functions over 80 lines: {len(longs)}")
    if listing:
        for n, name, f in longs:
            print(f"  {n:4d}  {name}  ({f})")
    print(f"Command::new sites: {len(spawns)}")
    if listing:
        for f, l in spawns:
            print(f"  {f.relative_to(SRC.parent)}: {l.strip()}")
    print(f"current_exe lookups: {len(exes)}")
    print(f"untyped JSON lookups: {len(untyped)}")
    if listing:
        for f, l in untyped:
            print(f"  {f.relative_to(SRC.parent)}: {l.strip()}")
    print(f"upward imports: {len(up)}")
    for a, b in up:
        print(f"  {a} -> {b}")
    print(f"module cycles: {len(cyc)}")
    for c in cyc:
        print("  " + " <-> ".join(c))


if __name__ == "__main__":
    main()
