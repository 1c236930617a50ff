"""edgeseq sweep without toolchains: search spaces and their files, the seeded batched proposer (same
proposals whatever order trials finish in, no repeats, resumable), constraints, Pareto fronts and the
choice, the sweep directory (resume checks, lock, atomic records), a failing trial as a record, the
report, and the command line's one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeseq.errors import ArtifactError, ConfigError
from edgeseq.sweep import Constraints, TrialConfig, default_space, load_space, parse_space
from edgeseq.sweep.pareto import choose, dominates, front, versus
from edgeseq.sweep.proposer import FINISHED, WAIT, Objective, Proposer, canonical
from edgeseq.sweep.store import Store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OBJ = [
    Objective("accuracy_int8_val", True),
    Objective("instructions_per_inference", False),
    Objective("flash_bytes", False),
]


def fake_metrics(params):
    """A deterministic stand-in for a measured trial (the proposer only sees numbers)."""
    h = params["model.hidden"]
    d = params.get("model.memory_d", 1)
    return {
        "accuracy_int8_val": 0.7 + 0.003 * h + 0.002 * d,
        "instructions_per_inference": 1000 * h * h + 500 * d,
        "flash_bytes": 300 * h + 100 * d,
    }


def drive(proposer, order=None, fail=()):
    """Run a proposer to the end like an engine that finishes each batch in ``order``'s order."""
    rng = np.random.default_rng(order)
    done = []
    while True:
        batch = []
        while True:
            p = proposer.next()
            if p is WAIT or p is FINISHED:
                break
            batch.append(p)
        if not batch:
            return done
        if order is not None:
            batch = [batch[i] for i in rng.permutation(len(batch))]
        for p in batch:
            rec = {"status": "failed"} if p.number in fail else {"status": "ok", "metrics": fake_metrics(p.params)}
            proposer.tell(p.number, rec)
            done.append((p.number, canonical(p.params)))


# ------------------------------------------------------------------------------------ spaces


def test_default_spaces_parse_and_round_trip():
    for task in ("har", "kws", "smartwatch"):
        sp = default_space(task)
        again = parse_space(sp.to_json(), task=task)
        assert again.fingerprint() == sp.fingerprint()
        assert "model.arch" in [d.name for d in sp.dims]


def test_space_file_errors_are_one_line_config_errors(tmp_path):
    cases = {
        '{"modle": {}}': "unknown section",
        '{"model": {"arch": "lmu"}, "train": {"epoch": 3}}': "unknown train setting 'epoch'",
        '{"model": {"hidden": {"choices": [8]}}}': "needs 'arch'",
        '{"model": {"arch": "lmu", "order": {"choices": [4], "when": {"arch": ["lmu"]}}}}': "not a searched setting",
        '{"model": {"arch": {"choices": ["lmu"]}, "order": {"choices": [4], "when": {"arch": ["gru"]}}}}': "not among the choices",
        '{"model": {"arch": "lmu", "theta": {"low": 64, "high": 32}}}': "'low' must be below 'high'",
        '{"model": {"arch": "lmu", "theta": {"low": 0, "high": 32, "log": true}}}': "log range needs 'low' > 0",
        '{"model": {"arch": "lmu", "hidden": {"choices": []}}}': "non-empty list",
        '{"model": {"arch": {"choices": ["lmu", "transformer"]}}}': "no 'har' training recipe",
        '{"model": {"arch": "lmu", "hidden": {"choices": [8], "low": 1}}}': "not both",
        "{not json": "not valid JSON",
    }
    for text, msg in cases.items():
        f = tmp_path / "space.json"
        f.write_text(text)
        with pytest.raises(ConfigError) as e:
            load_space(f, task="har")
        assert msg in str(e.value) and "\n" not in str(e.value), (text, str(e.value))
    with pytest.raises(ConfigError, match="no such file"):
        load_space(tmp_path / "missing.json")
    for dev in ("/dev/zero", tmp_path):  # never read without end, never a traceback
        with pytest.raises(ConfigError, match="is not a regular file|is a directory"):
            load_space(dev)
    (tmp_path / "dup.json").write_text('{"model": {"arch": "lmu", "arch": "gru"}}')
    with pytest.raises(ConfigError, match="dup.json"):
        load_space(tmp_path / "dup.json")


def test_conditional_dimensions_and_trial_config():
    sp = parse_space(
        {
            "model": {
                "arch": {"choices": ["lmu", "gru"]},
                "hidden": {"choices": [16, 32]},
                "order": {"choices": [4, 8], "when": {"arch": ["lmu"]}},
                "readout": "mean",
            },
            "train": {"epochs": 3},
            "prune": {"sparsity": {"choices": [0.0, 0.5]}},
            "quant": {"budget": 1.0},
        },
        task="har",
    )
    cfg = sp.trial_config({"model.arch": "lmu", "model.hidden": 16, "model.order": 8, "prune.sparsity": 0.5})
    assert cfg == TrialConfig(
        "lmu", {"readout": "mean", "hidden": 16, "order": 8}, {"epochs": 3}, {"sparsity": 0.5}, {"budget": 1.0}
    )
    assert TrialConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    assert cfg.label() == "lmu h16 o8 mean s0.5 b1"
    assert sp.dims[2].active({"model.arch": "lmu"}) and not sp.dims[2].active({"model.arch": "gru"})


# ------------------------------------------------------------------------------------ proposer


def test_proposals_do_not_depend_on_the_order_trials_finish_in():
    sp = default_space("har")
    runs = [drive(Proposer(sp, OBJ, Constraints(), seed=3, batch=4, trials=12), order=k) for k in (None, 1, 2)]
    assert sorted(runs[0]) == sorted(runs[1]) == sorted(runs[2])
    other = drive(Proposer(sp, OBJ, Constraints(), seed=4, batch=4, trials=12))
    assert sorted(other) != sorted(runs[0])
    assert len({p for _, p in runs[0]}) == 12  # no proposal repeated


def test_batches_wait_for_the_previous_batch():
    p = Proposer(default_space("har"), OBJ, Constraints(), seed=0, batch=2, trials=4)
    a, b = p.next(), p.next()
    assert (a.number, b.number) == (0, 1) and p.next() is WAIT
    p.tell(1, {"status": "ok", "metrics": fake_metrics(b.params)})
    assert p.next() is WAIT
    p.tell(0, {"status": "failed", "error": "x"})
    c = p.next()
    assert c.number == 2 and p.next().number == 3 and p.next() is FINISHED


def test_a_small_space_is_exhausted_without_repeats():
    sp = parse_space({"model": {"arch": "gru", "hidden": {"choices": [8, 16, 24]}}}, task="har")
    done = drive(Proposer(sp, OBJ, Constraints(), seed=0, batch=2, trials=6))
    assert len(done) == 3 and len({p for _, p in done}) == 3


def test_replaying_records_continues_like_an_uninterrupted_sweep():
    sp = default_space("har")
    full = drive(Proposer(sp, OBJ, Constraints(max_flash=9000), seed=0, batch=3, trials=9), fail={4})
    # a new proposer that is told the first 5 results (as a resumed sweep replays them) proposes the rest alike
    p = Proposer(sp, OBJ, Constraints(max_flash=9000), seed=0, batch=3, trials=9)
    recorded = dict(full[:5])
    again = []
    while True:
        q = p.next()
        if q is FINISHED:
            break
        assert q is not WAIT
        if q.number in recorded:
            assert canonical(q.params) == recorded[q.number]
        rec = {"status": "failed"} if q.number == 4 else {"status": "ok", "metrics": fake_metrics(q.params)}
        p.tell(q.number, rec)
        again.append((q.number, canonical(q.params)))
    assert again == sorted(full)


def test_constraints():
    c = Constraints(max_flash=64 * 1024, max_instructions=5_000_000, min_accuracy=0.92)
    ok = {"flash_bytes": 30000, "instructions_per_inference": 4e6, "accuracy_int8_val": 0.93}
    assert c.met(ok) and all(v <= 0 for v in c.violations(ok))
    assert not c.met({**ok, "accuracy_int8_val": 0.91}) and not c.met({**ok, "flash_bytes": 70000})
    assert not c.met({"accuracy_int8_val": 0.95})  # a missing measurement never meets a limit
    assert "flash <= 65,536 B" in c.describe()
    with pytest.raises(ConfigError):
        Constraints(min_accuracy=92.0)
    with pytest.raises(ConfigError):
        Constraints(max_ram=0)


# ------------------------------------------------------------------------------------ pareto / choice


def rec(n, acc, ins, flash, status="ok", test=None):
    return {
        "number": n,
        "status": status,
        "metrics": {
            "accuracy_int8_val": acc,
            "instructions_per_inference": ins,
            "flash_bytes": flash,
            "ram_bytes": 10000,
            "accuracy_int8_test": acc if test is None else test,
        },
    }


CRIT = [("accuracy_int8_val", True), ("instructions_per_inference", False), ("flash_bytes", False)]


def test_front_choice_and_dominance():
    recs = [
        rec(0, 0.90, 2e6, 20000),
        rec(1, 0.93, 3e6, 22000),
        rec(2, 0.92, 4e6, 30000),  # 2 dominated by 1
        rec(3, 0.95, 6e6, 40000),
        rec(4, 0.99, 1e6, 1000, status="failed"),
    ]
    assert front(recs, CRIT) == [0, 1, 3]
    assert dominates(recs[1]["metrics"], recs[2]["metrics"], CRIT)
    assert not dominates(recs[1]["metrics"], recs[1]["metrics"], CRIT)
    assert choose(recs, Constraints(), CRIT)[0] == 3  # most accurate
    n, why = choose(recs, Constraints(min_accuracy=0.92), CRIT)
    assert n == 1 and "fewest instructions" in why  # cheapest that reaches 92%
    assert choose(recs, Constraints(max_flash=21000), CRIT)[0] == 0
    n, why = choose(recs, Constraints(min_accuracy=0.999), CRIT)
    assert n is None and "no trial met" in why
    base = rec(9, 0.9283, 6.37e6, 27084)["metrics"]
    v = versus(recs, base, CRIT, "har_lmu", chosen=1)
    assert v["dominating_trials"] == [1] and v["chosen_dominates"] and v["trial"] == 1
    assert "trial 1 dominates har_lmu" in v["how"] and "2.12x fewer" in v["how"] and "19% less" in v["how"]


# ------------------------------------------------------------------------------------ sweep directory


def definition(**kw):
    d = {
        "task": "har",
        "target": "cortex-m4",
        "space_fingerprint": "abc",
        "seed": 0,
        "batch": 4,
        "startup": 4,
        "objectives": [],
        "constraints": {},
        "setup": {},
        "data": {},
        "trials": 8,
    }
    d.update(kw)
    return d


def test_store_resumes_only_the_same_sweep_and_locks(tmp_path):
    out = tmp_path / "sw"
    s = Store(out)
    assert s.begin(definition()) == {}
    with pytest.raises(ArtifactError, match="another sweep is running"):
        Store(out).begin(definition())
    s.save_trial(
        0, {"status": "ok", "params": {"model.hidden": 8}, "metrics": {"a": 1}, "files": {"model.ckpt": "aGVsbG8="}}
    )
    (s.trial_dir(1)).mkdir(parents=True)  # killed mid-write: files but no trial.json -> unfinished
    (s.trial_dir(1) / "model.ckpt").write_bytes(b"partial")
    s.close()
    s2 = Store(out)
    recs = s2.begin(definition(trials=12))
    assert list(recs) == [0] and recs[0]["files"] == ["model.ckpt"]
    assert (s2.trial_dir(0) / "model.ckpt").read_bytes() == b"hello"
    assert json.loads((out / "sweep.json").read_text())["trials"] == 12 == s2.definition()["trials"]
    s2.close()
    with pytest.raises(ConfigError, match="seed"):
        Store(out).begin(definition(seed=1))
    s3 = Store(out)
    assert s3.begin(definition(seed=1), force=True) == {}
    s3.close()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(ArtifactError, match="not a sweep directory"):
        Store(tmp_path / "other").begin(definition())


def test_store_refuses_unsafe_file_names(tmp_path):
    s = Store(tmp_path / "sw")
    s.begin(definition())
    with pytest.raises(ArtifactError):
        s.save_trial(0, {"params": {}, "files": {"../evil": "aGVsbG8="}})
    s.close()


# ------------------------------------------------------------------------------------ a trial


def test_a_failing_trial_is_a_record_not_an_exception():
    from edgeseq.sweep import TrialSetup, run_trial

    setup = TrialSetup("har", "cortex-m4", str(FIXTURES / "har_tiny.npz"), str(FIXTURES / "har_tiny.npz"))
    r = run_trial(setup, TrialConfig("gru", {"hidden": 8, "memory_d": 4}, {"epochs": 1}))
    assert r["status"] == "failed" and r["stage"] == "train"
    assert "memory_d" in r["error"] and "\n" not in r["error"]
    assert r["seconds"]["total"] >= 0 and "files" not in r


def test_report_renders_fronts_failures_and_references(tmp_path):
    from edgeseq.sweep.report import write_report

    recs = [rec(0, 0.90, 2e6, 20000), rec(1, 0.93, 3e6, 22000), rec(2, 0.5, 0, 0, status="failed")]
    for r in recs:
        r.update(
            params={"model.arch": "lmu"},
            label=f"lmu {r['number']}",
            pareto_val=r["number"] != 2,
            pareto_test=r["number"] == 1,
            feasible=r["status"] == "ok",
        )
    recs[2].update(stage="export", error="BuildError: boom")
    results = {
        "sweep": {
            "task": "har",
            "target": "cortex-m4",
            "trials": 3,
            "seed": 0,
            "batch": 2,
            "startup": 2,
            "objectives": [["accuracy_int8_val", "maximize"]],
            "constraints": {"max_flash": 21000},
            "data": {},
            "space": {},
        },
        "trials": recs,
        "pareto_front": {"validation": [0, 1], "test": [1]},
        "chosen": {"trial": 0, "why": "cheapest", "label": "lmu 0", "metrics": recs[0]["metrics"]},
        "baselines": {"har_lmu": {"status": "ok", "metrics": rec(9, 0.9283, 6.37e6, 27084)["metrics"]}},
        "versus_baselines": {},
        "counts": {"trials": 3, "ok": 2, "failed": 1},
        "sessions": [],
    }
    html = write_report(tmp_path / "report.html", results).read_text()
    assert html.count("<img") == 1 and "BuildError: boom" in html and "har_lmu" in html and "Chosen: trial 0" in html


# ------------------------------------------------------------------------------------ command line


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edgeseq", "sweep", *args], capture_output=True, text=True)


def test_cli_parses_limits_and_reports_bad_input_in_one_line(tmp_path, capsys):
    from edgeseq.cli import main
    from edgeseq.cli.sweep import parse_accuracy, parse_bytes, parse_count

    assert parse_bytes("64K") == 65536 and parse_bytes("32KB") == 32768 and parse_bytes("20000") == 20000
    assert parse_count("5M") == 5_000_000 and parse_count("2e6") == 2_000_000
    assert parse_accuracy("92%") == pytest.approx(0.92) and parse_accuracy("0.92") == 0.92
    assert main(["sweep", "--task", "har", "--target", "cortex-m4", "--show-space"]) == 0
    assert "model.theta" in capsys.readouterr().out
    for args, msg in (
        (["--max-flash", "64Q"], "--max-flash: cannot read '64Q'"),
        (["--min-accuracy", "92"], "give a fraction"),
        (["--space", str(tmp_path / "nope.json")], "no such file (search space file)"),
        (["--trials", "0"], "--trials must be >= 1"),
    ):
        rc = main(["sweep", "--task", "har", "--target", "cortex-m4", "--out", str(tmp_path / "o"), *args])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and msg in err, (args, err)
    p = cli("--task", "har", "--target", "cortex-m4", "--out", str(tmp_path / "o"), "--max-ram=-3K")
    assert p.returncode == 2 and p.stderr.startswith("edgeseq: error: --max-ram") and "Traceback" not in p.stderr


def test_auto_engine_without_ray_runs_in_process_with_a_hint(monkeypatch):
    from edgeseq.errors import ToolchainMissingError
    from edgeseq.sweep import engines

    monkeypatch.setattr(engines, "ray_available", lambda: False)
    said = []
    eng = engines.make_engine("auto", engines.EngineOptions(), log=said.append)
    assert eng.name == "sequential" and len(said) == 1 and "edgeseq[distributed]" in said[0]
    with pytest.raises(ToolchainMissingError, match="distributed"):
        engines.make_engine("auto", engines.EngineOptions(address="127.0.0.1:6379"))
    with pytest.raises(ToolchainMissingError):
        engines.make_engine("ray", engines.EngineOptions())


def test_import_is_cheap():
    code = (
        "import sys, edgeseq.sweep, edgeseq.cli.sweep; "
        "print([m for m in ('torch', 'optuna', 'ray', 'onnxruntime', 'tvm') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
