"""Where the instructions go: executed instructions per code region of a generated model, under QEMU.

A *region map* says which source lines of the generated C belong to which region (one micro-op
or one fused loop of the step program, the input quantizer, the pooled readout, ...); the
generator of the C writes it (``CSources.info["profile_map"]``). Profiling then

1. builds a copy of the binary with debug line tables (``-g``; GCC and Clang generate the same
   code with and without it, and the total count is checked against the plain build's),
2. reads the line table with the target's ``objdump --dwarf=decodedline`` and turns it into
   address ranges per region (lines of inlined helpers and library code belong to no region:
   the QEMU plugin charges them to the region that ran last, i.e. their caller),
3. runs the binary once under QEMU with the instruction-count plugin in its profiling mode
   (``support/insn_count_plugin.c``, ``ranges=FILE``) and divides each region's count by the number of steps
   (step regions) or sequences (readout regions).

    prof = profile(target, sources, x)            # sources: CSources with a profile_map
    prof["per_step"]      # [{"label", "ops", "instructions", "share"}], largest first
"""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, ConfigError
from ..toolchains import require
from .base import Target, plugin_library, run_tool

DRIVER_FILES = ("main.c", "esq_io_stdio.c", "esq_io_semihost.c", "cortexm_startup.c", "esq_io.h")
DRIVER = "driver and I/O (per call)"


def objdump_tool(target: Target) -> str:
    """The binutils objdump matching the target's compiler."""
    if target.name.startswith("cortex-m"):
        return require("arm-none-eabi-objdump")
    if target.name == "arm":
        return require("aarch64-linux-gnu-objdump")
    raise ConfigError(f"profiling needs an emulated target (arm, cortex-m*), not '{target.name}'")


_ROW = re.compile(r"^(\S+)\s+(\d+|-)\s+(0x[0-9a-fA-F]+|\d+)(?:\s|$)")


def line_table(objdump: str, binary: Path) -> list[tuple[int, str, int | None]]:
    """(address, file basename, line) rows of the DWARF line table, in order; line None ends a
    sequence."""
    res = run_tool(
        [objdump, "--dwarf=decodedline", "--wide", binary],
        where=str(binary),
        what="reading the debug line table",
        error=ArtifactError,
    )
    rows = []
    for text in res.stdout.decode("utf-8", "replace").splitlines():
        m = _ROW.match(text.strip())
        if not m:
            continue
        f, ln, addr = m.groups()
        rows.append((int(addr, 0), Path(f).name, None if ln == "-" else int(ln)))
    return rows


def ranges(rows: list[tuple[int, str, int | None]], region_of) -> list[tuple[int, int, int]]:
    """Address ranges [start, end) -> region id from line-table rows and ``region_of(file, line)``
    (None: no region). Rows at one address: the last one describes the instruction there. Inside
    a sequence (one function, with -ffunction-sections) that has regions, code of lines without
    one (inlined helpers and intrinsics, constants hoisted out of a loop) belongs to the next
    region in address order (the previous one at the end); sequences without any region stay
    unmapped and are charged at run time to the region that called them."""
    out: list[tuple[int, int, int]] = []
    seq: list[tuple[int, str, int | None]] = []

    def flush():
        by_addr: dict[int, tuple[str, int | None]] = {}
        order: list[int] = []
        for a, f, ln in seq:
            if a not in by_addr:
                order.append(a)
            by_addr[a] = (f, ln)
        spans = []
        for a, b in zip(order, order[1:]):
            f, ln = by_addr[a]
            if b > a:
                spans.append([a, b, None if ln is None else region_of(f, ln)])
        if not any(r is not None for _, _, r in spans):
            return
        nxt = None
        for sp in reversed(spans):
            if sp[2] is None:
                sp[2] = nxt
            else:
                nxt = sp[2]
        prev = None
        for sp in spans:
            if sp[2] is None:
                sp[2] = prev
            else:
                prev = sp[2]
        for a, b, r in spans:
            if out and out[-1][1] == a and out[-1][2] == r:
                out[-1] = (out[-1][0], b, r)
            else:
                out.append((a, b, r))

    for row in rows:
        seq.append(row)
        if row[2] is None:
            flush()
            seq = []
    if seq:
        flush()
    out.sort()
    return out


def region_lookup(profile_map: dict, model_file: str = "model.c"):
    """(labels, region_of) for a generator's region map: every region of the map, plus one for
    the driver and its I/O."""
    regions = list(profile_map["regions"])
    labels = [r["label"] for r in regions] + [DRIVER]
    by_line: dict[int, int] = {}
    for k, r in enumerate(regions):
        for ln in range(int(r["first"]), int(r["last"]) + 1):
            by_line[ln] = k
    driver = len(regions)

    def region_of(f: str, line: int):
        if f == model_file:
            return by_line.get(line)
        if f in DRIVER_FILES:
            return driver
        return None

    return labels, region_of


def code_bytes(objdump: str, obj: Path) -> bytes:
    """The executable bytes of an object file (every code section, in order)."""
    res = run_tool(
        [objdump, "-d", "--no-show-raw-insn", "--no-addresses", obj],
        where=str(obj),
        what="disassembling",
        error=ArtifactError,
    )
    text = res.stdout.decode("utf-8", "replace")
    return "\n".join(ln for ln in text.splitlines() if ln.startswith("\t") or ln.startswith(" ")).encode()


def profile(
    target: Target, sources, inputs, work_dir: str | Path | None = None, reference_object: str | Path | None = None
) -> dict[str, Any]:
    """Instructions per step and per region for the model in ``sources`` (a ``CSources`` whose
    info has a ``profile_map``) on ``inputs`` (B, T, F) float, run in the driver's step mode.
    With ``reference_object`` (the plain build's ``model.o``) ``same_code`` says whether the
    debug-info build's model code is identical to it."""
    pmap = sources.info.get("profile_map")
    if not pmap:
        raise ConfigError("these sources carry no region map (the integer C backend writes one)")
    if not target.counts_instructions:
        raise ConfigError(
            f"profiling counts instructions under QEMU; target '{target.name}' runs natively",
            hint="use arm, arm:<cpu> or a cortex-m target",
        )
    x = np.asarray(inputs, np.float32)
    b, t, _ = x.shape
    dbg = copy.copy(target)
    dbg.extra_cflags = tuple(target.extra_cflags) + ("-g",)
    with tempfile.TemporaryDirectory(prefix="edgeseq-prof-", dir=work_dir) as tmp:
        binary = dbg.build(sources, Path(tmp) / "build")
        od = objdump_tool(target)
        same = None
        if reference_object is not None and Path(reference_object).exists():
            same = code_bytes(od, Path(reference_object)) == code_bytes(od, Path(tmp) / "build" / "obj" / "model.o")
        labels, region_of = region_lookup(pmap)
        rng = ranges(line_table(od, binary), region_of)
        rfile = Path(tmp) / "ranges.txt"
        rfile.write_text("".join(f"{a:x} {e:x} {r}\n" for a, e, r in rng))
        if "," in str(rfile):
            raise ConfigError(f"the profile's temporary directory contains a comma: {rfile}")
        plugin = plugin_library("insn_count_plugin") + f",ranges={rfile}"
        res = dbg.run(binary, x, mode="step", count=plugin)
    counts = _parse(res.plugin_log, labels)
    out = summarize(pmap, labels, counts, b, t, res.instructions)
    out["same_code"] = same
    return out


def _parse(text: str, labels: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("edgeseq-prof:"):
            _, rid, n = line.split()
            rid = int(rid)
            label = labels[rid] if 0 <= rid < len(labels) else "start-up"
            out[label] = out.get(label, 0) + int(n)
    return out


def summarize(pmap: dict, labels: list[str], counts: dict[str, int], b: int, t: int, total: int | None) -> dict:
    regions = {r["label"]: r for r in pmap["regions"]}
    per_step, per_seq, other = [], [], []
    for label, n in counts.items():
        r = regions.get(label)
        if r is not None and r["per"] == "step":
            per_step.append({"label": label, "ops": r.get("ops", []), "instructions": n / (b * t)})
        elif r is not None:
            per_seq.append({"label": label, "ops": r.get("ops", []), "instructions": n / b})
        else:
            other.append({"label": label, "instructions": n})
    step_total = sum(e["instructions"] for e in per_step)
    for e in per_step:
        e["share"] = e["instructions"] / step_total if step_total else 0.0
    per_step.sort(key=lambda e: -e["instructions"])
    per_seq.sort(key=lambda e: -e["instructions"])
    return {
        "per_step": per_step,
        "per_step_total": step_total,
        "per_sequence": per_seq,
        "other": other,
        "total": total,
        "batch": b,
        "steps": t,
        "method": "QEMU plugin (insn_count_plugin.c, ranges mode) on a -g build of the same sources, step mode: each "
        "instruction counted for the region of its source line (DWARF line table); inlined helpers "
        "and library code for the region that called them; step regions divided by B*T, readout "
        "regions by B",
    }


__all__ = ["DRIVER", "line_table", "profile", "ranges", "region_lookup", "summarize"]
