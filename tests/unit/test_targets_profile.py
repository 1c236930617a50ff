"""Per-op instruction profiles (edgeseq.targets.profile) and compiler selection
(edgeseq.targets.compilers): the pure-Python parts, no toolchain needed."""

from __future__ import annotations

import pytest

from edgeseq.errors import ConfigError


def test_line_table_rows_become_region_ranges():
    from edgeseq.targets.profile import ranges

    regions = {("model.c", 10): 0, ("model.c", 20): 1}

    def region_of(f, line):
        return regions.get((f, line))

    rows = [
        (0x100, "model.c", 10),
        (0x104, "model.c", 10),
        (0x108, "arm_mve.h", 77),
        (0x10C, "model.c", 20),
        (0x110, "model.c", 99),
        (0x118, "model.c", None),  # end of one function's sequence
        (0x200, "helper.c", 5),
        (0x210, "helper.c", None),
    ]  # a function without regions: unmapped
    got = ranges(rows, region_of)
    # inlined code (arm_mve.h) joins the next region; trailing unmapped lines the previous one
    assert got == [(0x100, 0x108, 0), (0x108, 0x118, 1)]
    assert ranges([(0, "x.c", 1), (4, "x.c", None)], region_of) == []


def test_region_map_of_generated_code_names_every_unit():
    from edgeseq.export.c.intgen import generate_int
    from edgeseq.targets.profile import DRIVER, region_lookup

    from .c_int_cases import zoo_quantized

    q = zoo_quantized("edgeseq", "lmu_full")
    src = generate_int(q.program, 6, target="cortex-m4")
    pmap = src.info["profile_map"]
    lines = src.files["model.c"].split("\n")
    labels, region_of = region_lookup(pmap)
    assert labels[-1] == DRIVER and region_of("main.c", 3) == len(labels) - 1 and region_of("other.c", 1) is None
    units = [r for r in pmap["regions"] if r["ops"]]
    emitted = {op["index"] for r in units for op in r["ops"]}
    kinds = {op["kind"] for r in units for op in r["ops"]}
    assert "matvec" in kinds and "requant" in kinds
    for r in units:  # each unit's lines start at its own head comment and stay inside the function
        assert lines[r["first"] - 1].strip().startswith(f"/* #{r['ops'][0]['index']} ")
        assert r["per"] in ("step", "sequence")
    # the step program's emitted ops are all mapped (ops without code of their own are not units)
    body = "\n".join(lines)
    for i, op in enumerate(q.program.step):
        if f"/* #{i} " in body:
            assert i in emitted or op.kind in ("load", "store")
    spans = sorted((r["first"], r["last"]) for r in pmap["regions"])
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # no line in two regions


def test_summary_divides_step_regions_by_steps_and_readouts_by_sequences():
    from edgeseq.targets.profile import DRIVER, summarize

    pmap = {
        "regions": [
            {"label": "step: matvec -> y", "per": "step", "ops": [{"kind": "matvec"}]},
            {"label": "step: requant -> z", "per": "step", "ops": []},
            {"label": "readout: div -> m", "per": "sequence", "ops": []},
        ]
    }
    s = summarize(
        pmap,
        [],
        {"step: matvec -> y": 3000, "step: requant -> z": 1000, "readout: div -> m": 80, DRIVER: 500},
        b=2,
        t=10,
        total=4580,
    )
    assert [e["instructions"] for e in s["per_step"]] == [150.0, 50.0]
    assert s["per_step"][0]["share"] == pytest.approx(0.75) and s["per_step_total"] == 200.0
    assert s["per_sequence"][0]["instructions"] == 40.0 and s["other"][0]["label"] == DRIVER


def test_compiler_option_and_automatic_choice(monkeypatch):
    from edgeseq.targets import compilers, get_target

    assert compilers.check_compiler("clang-19") == "clang-19"
    with pytest.raises(ConfigError, match="unknown compiler 'icc'"):
        get_target("cortex-m4", compiler="icc")
    monkeypatch.setattr(compilers, "find_clang", lambda name="clang": None)
    assert compilers.resolve("auto", "cortex-m55") == "gcc"  # no Clang installed: GCC
    monkeypatch.setattr(compilers, "find_clang", lambda name="clang": "/usr/bin/clang-14")
    monkeypatch.setattr(compilers, "clang_major", lambda p: 14)
    assert compilers.resolve("auto", "cortex-m55") == "gcc"  # Clang 14 is not preferred (measured)
    assert compilers.resolve("clang", "cortex-m55") == "clang-14"  # ... unless asked for
    monkeypatch.setattr(compilers, "find_clang", lambda name="clang": "/usr/bin/clang-19")
    monkeypatch.setattr(compilers, "clang_major", lambda p: 19)
    assert (
        compilers.resolve("auto", "cortex-m55") == "clang-19" and compilers.resolve("auto", "cortex-m4") == "clang-19"
    )
    assert compilers.resolve("auto", "x86") == "gcc" and compilers.resolve("gcc", "cortex-m55") == "gcc"
    t = get_target("arm:cortex-a72")
    spec = t.spec()
    assert spec["options"]["compiler"] == "clang-19"  # the artifact records what it was built with
    assert get_target(spec["name"], **spec["options"]).resolved_compiler() == "clang-19"
    assert "--target=aarch64-linux-gnu" in t.cflags() and "--target=aarch64-linux-gnu" not in t.gcc_flags()
    assert all(f in t.cflags() for f in t.gcc_flags()) and "-mcpu=cortex-a72" in t.gcc_flags()
