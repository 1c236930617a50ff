"""edgeseq sweep end to end on a tiny space and the tiny HAR fixture (real training, quantization,
Cortex-M4 firmware under qemu-system-arm):

- the driver killed (SIGKILL) mid-sweep: the rerun keeps every recorded trial as it was, does not run
  them again, and proposes the remaining trials the uninterrupted sweep would have; a failing
  trial (a bad configuration) is recorded with its error and the sweep goes on;
- a real 2-worker Ray cluster (``ray start --head`` on 127.0.0.1, token authentication, stopped
  afterwards, no process left behind): a worker killed mid-trial loses nothing already recorded,
  the trial is recorded as failed and the sweep finishes; every other trial matches the sequential
  in-process engine's for the same seed, number for number.
"""

import json
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI

pytestmark = pytest.mark.toolchain

FIXTURE = str(Path(__file__).resolve().parents[1] / "fixtures" / "har_tiny.npz")
BIN = Path(sys.executable).parent


def need_cortex_m4(need_tool):
    need_tool("arm-none-eabi-gcc")
    need_tool("qemu-system-arm")


def sweep_cmd(out: Path, space: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgeseq",
        "sweep",
        "--task",
        "har",
        "--target",
        "cortex-m4",
        "--trials",
        "4",
        "--batch",
        "2",
        "--space",
        str(space),
        "--train-data",
        FIXTURE,
        "--test-data",
        FIXTURE,
        "--out",
        str(out),
        "--no-baseline",
        "--device-windows",
        "4",
        "--chosen-device-windows",
        "8",
        "--verbose",
        *extra,
    ]


def write_space(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def recorded(out: Path) -> dict[int, bytes]:
    return (
        {
            int(d.name): (d / "trial.json").read_bytes()
            for d in sorted((out / "trials").glob("*"))
            if (d / "trial.json").is_file()
        }
        if (out / "trials").is_dir()
        else {}
    )


def stream(proc) -> "queue.Queue[str | None]":
    q: "queue.Queue[str | None]" = queue.Queue()

    def pump():
        for line in proc.stdout:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def lines_until_exit(proc, on_line, timeout: float = 420.0) -> list[str]:
    q, seen, deadline = stream(proc), [], time.monotonic() + timeout
    while True:
        try:
            line = q.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("sweep did not finish in time:\n" + "".join(seen[-30:])) from None
        if line is None:
            proc.wait(timeout=60)
            return seen
        seen.append(line)
        if on_line(line) == "stop":
            return seen


# ------------------------------------------------------------------------------------ sequential


def test_killed_sweep_resumes_without_repeating_trials(tmp_path, need_tool):
    need_cortex_m4(need_tool)
    # "memory_d" is fixed for every architecture: a GRU cannot take it, so GRU trials fail at training
    space = write_space(
        tmp_path / "space.json",
        {
            "model": {
                "arch": {"choices": ["lmu", "gru"]},
                "hidden": {"choices": [8, 16]},
                "order": {"choices": [4, 8], "when": {"arch": ["lmu"]}},
                "memory_d": 2,
            },
            "train": {"epochs": 2},
            "quant": {"budget": {"choices": [0.5, 1.0]}},
        },
    )
    out = tmp_path / "sweep"
    cmd = sweep_cmd(out, space, "--engine", "sequential", "--seed", "3")  # seed 3: one GRU, one LMU first
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def kill_after_two(line):
        if line.startswith("[2/4]"):
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its compilers / qemu, mid-sweep
            proc.wait(timeout=60)
            return "stop"

    log = lines_until_exit(proc, kill_after_two)
    assert proc.returncode == -signal.SIGKILL, "".join(log)
    before = recorded(out)
    assert sorted(before) == [0, 1]
    assert not (out / "results.json").exists()

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=420)
    text = res.stdout + res.stderr
    assert "resuming" in text and "2 trial(s) already recorded" in text, text
    assert not re.search(r"trial [01] started", text), text  # finished trials are not run again
    after = recorded(out)
    assert sorted(after) == [0, 1, 2, 3]
    assert all(after[n] == before[n] for n in before)  # and kept byte for byte
    sessions = json.loads((out / "sessions.json").read_text())
    assert [s["status"] for s in sessions] == ["running", "complete"] and sessions[1]["trials_run"] == 2

    results = json.loads((out / "results.json").read_text())
    trials = results["trials"]
    for t in trials:
        if t["params"]["model.arch"] == "gru":
            assert t["status"] == "failed" and t["stage"] == "train" and "memory_d" in t["error"]
        else:
            assert t["status"] == "ok" and t["metrics"]["bit_exact"] and t["metrics"]["device_agreement"] == 1.0
            assert t["metrics"]["instructions_per_inference"] > 0 and t["metrics"]["flash_bytes"] > 0
    statuses = {t["status"] for t in trials}
    assert statuses == {"ok", "failed"}
    assert res.returncode == 0, text

    # the resumed sweep proposed what an uninterrupted one proposes after the same two results
    from edgeseq.sweep import load_space
    from edgeseq.sweep.proposer import FINISHED, Constraints, Proposer, canonical
    from edgeseq.sweep.run import objectives

    sw = results["sweep"]
    p = Proposer(
        load_space(space, task="har"),
        objectives("cortex-m4"),
        Constraints(),
        seed=sw["seed"],
        batch=sw["batch"],
        trials=4,
        startup=sw["startup"],
    )
    want = []
    while (q := p.next()) is not FINISHED:
        want.append(canonical(q.params))
        p.tell(q.number, trials[q.number])
    assert want == [canonical(t["params"]) for t in trials]

    assert results["chosen"]["trial"] is not None
    art = results["chosen"]["artifact"]
    assert art["costs_match_trial"] and art["device_agreement"] == 1.0
    assert (out / "model" / "manifest.json").is_file()
    assert len((out / "results.csv").read_text().strip().splitlines()) == 5
    assert "<img" in (out / "report.html").read_text()


# ------------------------------------------------------------------------------------ Ray cluster


def need_ray():
    if not (BIN / "ray").is_file():
        msg = "Ray is not installed (pip install 'edgeseq[distributed]')"
        if IN_CI:
            pytest.fail(f"CI=true but {msg}")
        pytest.skip(msg)


def session_processes(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,sid="], capture_output=True, text=True).stdout
    return [int(p) for p, s in (ln.split() for ln in out.splitlines()) if int(s) == sid]


@pytest.fixture
def ray_cluster():
    """A 2-CPU Ray head on 127.0.0.1 in its own session and temp dir, with its own auth token;
    stopped (SIGTERM to ``ray start --block``) afterwards, and checked to leave no process."""
    need_ray()
    tmp = tempfile.mkdtemp(prefix="esqray", dir="/tmp")  # short: Ray's unix socket paths are length-limited
    token = Path(tmp) / "token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={tmp}",
            "--object-store-memory=100000000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    sid = head.pid
    try:
        q, seen, deadline = stream(head), [], time.monotonic() + 180
        while True:
            line = q.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "ray start exited:\n" + "".join(seen)
            seen.append(line)
            if "block forever" in line:
                break
        yield {"address": f"127.0.0.1:{port}", "env": env}
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(sid, signal.SIGKILL)
            head.wait(timeout=30)
        for _ in range(20):
            left = session_processes(sid)
            if not left:
                break
            time.sleep(0.5)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
        assert not left, f"Ray processes left running after the cluster stopped: {left}"


def test_ray_cluster_sweep_survives_a_killed_worker_and_matches_sequential(tmp_path, need_tool, ray_cluster):
    need_cortex_m4(need_tool)
    space = write_space(
        tmp_path / "space.json",
        {
            "model": {"arch": "lmu", "hidden": {"choices": [8, 16]}, "order": {"choices": [4, 8]}, "memory_d": 2},
            "train": {"epochs": 3},
            "quant": {"budget": {"choices": [0.5, 1.0]}},
        },
    )
    out = tmp_path / "ray"
    cmd = sweep_cmd(
        out, space, "--engine", "ray", "--address", ray_cluster["address"], "--workers", "2", "--retries", "0"
    )
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ray_cluster["env"], start_new_session=True
    )
    pids: dict[int, int] = {}
    state: dict = {"killed": None}

    def kill_a_worker_mid_trial(line):
        m = re.match(r"trial (\d+) started: .*\(pid (\d+)\)\]", line)
        if m:
            pids[int(m[1])] = int(m[2])
        m = re.match(r"trial (\d+): (train|quantize)$", line.strip())
        if m and state["killed"] is None:
            done = recorded(out)
            n = int(m[1])
            if len(done) >= 2 and n not in done:
                state["before"] = done
                os.kill(pids[n], signal.SIGKILL)  # the Ray worker process running trial n
                state["killed"] = n

    log = "".join(lines_until_exit(proc, kill_a_worker_mid_trial))
    assert proc.returncode == 0, log
    n = state["killed"]
    assert n is not None, "no trial was seen running after two had finished:\n" + log
    after = recorded(out)
    assert sorted(after) == [0, 1, 2, 3], log
    assert all(after[k] == v for k, v in state["before"].items())  # nothing recorded was lost or rewritten
    killed = json.loads(after[n])
    assert killed["status"] == "failed" and "Ray worker" in killed["error"], killed
    results = json.loads((out / "results.json").read_text())
    assert results["sessions"][0]["engine"]["engine"] == "ray" and results["sessions"][0]["engine"]["workers"] == 2

    from edgeseq.sweep import sweep

    seq = sweep(
        "har",
        "cortex-m4",
        4,
        tmp_path / "seq",
        space=space,
        batch=2,
        engine="sequential",
        train_data=FIXTURE,
        test_data=FIXTURE,
        device_windows=4,
        baselines=[],
        export_chosen=False,
        log=lambda m: None,
    )
    ray_trials = {t["number"]: t for t in results["trials"]}
    for t in seq.trials:
        r = ray_trials[t["number"]]
        assert r["params"] == t["params"]
        if t["number"] != n:
            assert r["status"] == t["status"] == "ok"
            assert r["metrics"] == t["metrics"], t["number"]
