"""A sweep directory: its definition, one directory per finished trial, the measured baselines, the
sessions that worked on it, and the lock that keeps two sweeps from writing it at once.

    OUT/sweep.json               what the sweep is (task, target, space, seed, batch, constraints, ...)
    OUT/trials/0007/trial.json   a finished trial's record (written last, atomically: present = finished)
    OUT/trials/0007/model.ckpt   its trained (pruned) checkpoint, model.q.esq its quantized graph
    OUT/baselines/har_lmu.json   a reference model measured like a trial
    OUT/sessions.json            every run of ``edgeseq sweep`` on the directory: engine, workers, wall time

Every file is written atomically, so a sweep killed at any moment (the driver, or a worker mid-trial)
keeps every trial recorded before, and a resumed sweep reads them back instead of running them again.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional

from ..errors import ArtifactError, ConfigError
from ..util.fs import atomic_write_bytes, atomic_write_json
from ..util.safeio import read_json

FORMAT = "edgeseq-sweep/1"
# definition keys that must match for a directory to be resumed (the trial count may grow)
IDENTITY = (
    "task",
    "target",
    "space_fingerprint",
    "seed",
    "batch",
    "startup",
    "objectives",
    "constraints",
    "setup",
    "data",
)
# what a record that cannot be read raises (its callers treat it as absent or refuse the directory)
UNREADABLE = (OSError, ValueError, ArtifactError)


def _read_json(path: Path) -> Any:
    """A sweep record through the safe reading layer (a regular file, bounded size, strict JSON)."""
    return read_json(path, ArtifactError, what="sweep record")


class Store:
    """The files of one sweep directory (see the module docstring)."""

    def __init__(self, out):
        self.out = Path(out)
        self._lock_fd: Optional[int] = None

    # -- lifecycle -------------------------------------------------------------------------------
    def begin(self, definition: Mapping[str, Any], *, force: bool = False) -> dict[int, dict]:
        """Create the directory, or reopen it to resume (the definition must match, see IDENTITY),
        or replace it (``force``); take the lock. Returns the recorded trials."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise ArtifactError("exists and is not a directory", where=str(out))
        if out.exists() and force:
            if any(out.iterdir()):
                self._lock()  # not while another sweep writes it
                self._unlock()
                shutil.rmtree(out)
        elif out.exists() and any(out.iterdir()) and not (out / "sweep.json").is_file():
            raise ArtifactError(
                "exists and is not a sweep directory",
                where=str(out),
                hint="pick another --out, or pass --force to replace it",
            )
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ArtifactError(f"cannot create the sweep directory ({e.strerror})", where=str(out)) from None
        self._lock()
        path = out / "sweep.json"
        if path.is_file():
            try:
                old = _read_json(path)
            except UNREADABLE as e:
                self._unlock()
                raise ArtifactError(
                    f"unreadable sweep definition ({e})", where=str(path), hint="pass --force to start the sweep over"
                ) from None
            diff = [k for k in IDENTITY if old.get(k) != definition.get(k)]
            if old.get("format") != FORMAT or diff:
                self._unlock()
                what = ", ".join(f"{k} ({_short(old.get(k))} there, {_short(definition.get(k))} now)" for k in diff)
                raise ConfigError(
                    f"this directory holds a different sweep: {what or 'another format'}",
                    where=str(out),
                    hint="use the same settings to resume it, another --out, or --force to start over",
                )
            merged = dict(old)
            merged["trials"] = max(int(old.get("trials", 0)), int(definition["trials"]))
            atomic_write_json(path, merged)
        else:
            atomic_write_json(path, {"format": FORMAT, **definition})
        return self.records()

    def close(self) -> None:
        self._unlock()

    def definition(self) -> Optional[dict]:
        """The recorded definition of the sweep in this directory, if there is one."""
        try:
            d = _read_json(self.out / "sweep.json")
        except UNREADABLE:
            return None
        return d if isinstance(d, dict) else None

    def _lock(self) -> None:
        import fcntl

        fd = os.open(self.out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ArtifactError(
                "another sweep is running in this directory",
                where=str(self.out),
                hint="wait for it, or use another --out",
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- trials ----------------------------------------------------------------------------------
    def trial_dir(self, number: int) -> Path:
        return self.out / "trials" / f"{number:04d}"

    def save_trial(self, number: int, record: Mapping[str, Any]) -> dict:
        """Persist a finished trial: its files first, its trial.json last. Returns the record as
        stored (files replaced by their names)."""
        d = self.trial_dir(number)
        rec = {k: v for k, v in record.items() if k != "files"}
        names = []
        for name, b64 in (record.get("files") or {}).items():
            if "/" in name or name.startswith("."):
                raise ArtifactError(f"refusing to write trial file '{name}'", where=str(d))
            try:
                atomic_write_bytes(d / name, base64.b64decode(b64, validate=True))
            except binascii.Error:
                raise ArtifactError(f"trial file '{name}' is not valid base64", where=str(d)) from None
            names.append(name)
        rec["files"] = sorted(names)
        rec["number"] = number
        atomic_write_json(d / "trial.json", rec)
        return rec

    def records(self) -> dict[int, dict]:
        """Every finished trial's record, by number (directories without trial.json are unfinished)."""
        out: dict[int, dict] = {}
        root = self.out / "trials"
        if not root.is_dir():
            return out
        for d in sorted(root.iterdir()):
            f = d / "trial.json"
            if not (d.name.isdigit() and f.is_file()):
                continue
            try:
                rec = _read_json(f)
            except UNREADABLE:
                continue  # unreadable: the trial counts as unfinished and runs again
            if isinstance(rec, dict) and rec.get("number") == int(d.name) and isinstance(rec.get("params"), dict):
                out[int(d.name)] = rec
        return out

    # -- baselines and sessions ------------------------------------------------------------------
    def baseline(self, name: str) -> Optional[dict]:
        f = self.out / "baselines" / f"{_safe(name)}.json"
        try:
            return _read_json(f) if f.is_file() else None
        except UNREADABLE:
            return None

    def save_baseline(self, name: str, record: Mapping[str, Any]) -> None:
        atomic_write_json(self.out / "baselines" / f"{_safe(name)}.json", dict(record))

    def sessions(self) -> list[dict]:
        f = self.out / "sessions.json"
        try:
            data = _read_json(f) if f.is_file() else []
        except UNREADABLE:
            data = []
        return data if isinstance(data, list) else []

    def save_session(self, index: int, session: Mapping[str, Any]) -> None:
        s = self.sessions()
        s[index : index + 1] = [dict(session)]
        atomic_write_json(self.out / "sessions.json", s)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name) or "model"


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True) if not isinstance(v, str) else v
    return text if len(text) <= 60 else text[:57] + "..."
