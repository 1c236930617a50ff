"""Atomic output directories (edgeseq.util.fs): exactly one of several concurrent runs to a new
--out wins, a symlinked --out is followed, unusable names fail before any work, files are never
replaced when they are devices, and temporary files of killed writers are cleaned up."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from edgeseq.errors import ArtifactError
from edgeseq.util.fs import _stage_prefix, atomic_write_bytes, check_output_dir, output_dir


def _race(out: str, i: int, q) -> None:
    try:
        with output_dir(out) as stage:
            (stage / "who").write_text(str(i))
            time.sleep(0.3)
        q.put(("ok", i))
    except ArtifactError as e:
        q.put(("error", str(e)))


@pytest.mark.parametrize("round_", range(3))
def test_exactly_one_concurrent_run_wins(tmp_path, round_):
    out = tmp_path / "race"
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(out), i, q)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = [q.get(timeout=10) for _ in procs]
    winners = [i for kind, i in results if kind == "ok"]
    assert len(winners) == 1, results
    assert (out / "who").read_text() == str(winners[0])
    for kind, msg in results:
        if kind == "error":
            # a run that starts after the winner finished sees the finished output
            assert (
                "another edgeseq run" in msg or "created this output directory first" in msg or "already exists" in msg
            ), msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race"]


def test_symlinked_out_is_followed_and_kept(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "old").write_text("old")
    link = tmp_path / "link"
    link.symlink_to(real)
    with output_dir(link, force=True) as stage:
        (stage / "new").write_text("new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert sorted(p.name for p in real.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"], "no stale links or staging"


def test_replacing_keeps_previous_until_done_and_cleans_up(tmp_path):
    out = tmp_path / "o"
    with output_dir(out) as stage:
        (stage / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with output_dir(out, force=True) as stage:
            (stage / "v").write_text("2")
            raise RuntimeError("fails half-way")
    assert (out / "v").read_text() == "1"
    with output_dir(out, force=True) as stage:
        (stage / "v").write_text("3")
    assert (out / "v").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_failure_leaves_no_parent_directories(tmp_path):
    out = tmp_path / "a" / "b" / "o"
    with pytest.raises(RuntimeError):
        with output_dir(out):
            raise RuntimeError("x")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "bad, message",
    [
        (".", "refusing to use the current directory"),
        ("..", "refusing to use the current directory"),
        ("/", "refusing to use the current directory"),
        ("n" * 300, "300 bytes long"),
        ("", "empty"),
        (123, "must be a string or a path"),
    ],
)
def test_unusable_outputs_fail_early(tmp_path, monkeypatch, bad, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArtifactError, match=message):
        check_output_dir(bad, force=True)
    assert list(tmp_path.iterdir()) == []


def _killed_writer(out: str) -> None:
    with output_dir(out):
        os.kill(os.getpid(), signal.SIGKILL)


def test_stale_staging_of_killed_run_is_removed(tmp_path):
    out = tmp_path / "o"
    p = mp.get_context("fork").Process(target=_killed_writer, args=(str(out),))
    p.start()
    p.join(30)
    assert p.exitcode == -signal.SIGKILL
    prefix = _stage_prefix(out)
    assert [x for x in tmp_path.iterdir() if x.name.startswith(prefix)], "the killed run left its staging"
    check_output_dir(out)  # the next run to the same --out removes it, without --force
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_refuses_devices_and_cleans_stale_temporaries(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ArtifactError, match="not a regular file"):
        atomic_write_bytes(fifo, b"x")
    assert fifo.exists() and not fifo.is_file()
    target = tmp_path / "m.q.esq"
    from edgeseq.util.fs import _tmp_prefix

    stale = tmp_path / f"{_tmp_prefix(target)}999999999-abc.tmp"  # a pid that cannot be alive
    stale.write_bytes(b"half")
    atomic_write_bytes(target, b"whole")
    assert target.read_bytes() == b"whole" and not stale.exists()
