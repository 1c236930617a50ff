"""``edgeseq demo har`` building blocks: the IMU CSV reader (required columns, 50 Hz check, labels by
name or id, one-line typed errors from the CLI), windowing with majority labels, and the refusal of a
missing toolchain with its install command."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from edgeseq.demo.har import CHANNELS, HOP, WINDOW, read_imu_csv, windows
from edgeseq.errors import DatasetError

LABELS = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")


def _csv(path, n=300, rate=50.0, columns=("time", *CHANNELS, "label"), label=lambda i: "walking"):
    rng = np.random.default_rng(0)
    rows = [",".join(columns)]
    for i in range(n):
        vals = []
        for c in columns:
            if c == "time":
                vals.append(f"{i / rate:.5f}")
            elif c == "label":
                vals.append(str(label(i)))
            else:
                vals.append(f"{rng.normal():.5f}")
        rows.append(",".join(vals))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_reads_channels_in_any_order_and_labels_by_name_or_id(tmp_path):
    cols = ("gyro_z", "acc_x", "label", "acc_y", "gyro_x", "acc_z", "gyro_y", "time")
    p = _csv(tmp_path / "rec.csv", n=200, columns=cols, label=lambda i: "LAYING" if i < 100 else 3)
    rec = read_imu_csv(p, labels=LABELS)
    assert rec["signals"].shape == (200, 6) and rec["sample_rate"] == pytest.approx(50.0, rel=1e-3)
    raw = np.loadtxt(p, delimiter=",", skiprows=1, dtype=str)
    # columns are reordered to acc_x..gyro_z
    np.testing.assert_allclose(rec["signals"][:, 0], raw[:, 1].astype(np.float32))
    np.testing.assert_allclose(rec["signals"][:, 5], raw[:, 0].astype(np.float32))
    assert rec["labels"][:100].tolist() == [5] * 100 and rec["labels"][100:].tolist() == [3] * 100


def test_windows_hop_and_majority_label():
    sig = np.arange(400 * 6, dtype=np.float32).reshape(400, 6)
    lab = np.array([0] * 150 + [2] * 250)
    x, y = windows(sig, lab)
    assert x.shape == ((400 - WINDOW) // HOP + 1, WINDOW, 6)
    np.testing.assert_array_equal(x[1, 0], sig[HOP])
    # window 1 covers samples 64..191: 86 of label 0, 42 of label 2
    assert y[0] == 0 and y[1] == 0 and y[2] == 2
    x2, y2 = windows(sig, None)
    assert (y2 == -1).all() and len(x2) == len(x)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "missing column(s) gyro_y, gyro_z"),
        ("rate", "sample rate is 25.0 Hz; the HAR model expects 50 Hz"),
        ("short", "at least 128"),
        ("label", "unknown label 'jogging'"),
        ("nan", "NaN or Inf"),
    ],
)
def test_bad_csv_is_a_typed_error(tmp_path, case, message):
    p = tmp_path / f"{case}.csv"
    if case == "missing":
        _csv(p, columns=("time", "acc_x", "acc_y", "acc_z", "gyro_x"))
    elif case == "rate":
        _csv(p, rate=25.0)
    elif case == "short":
        _csv(p, n=100)
    elif case == "label":
        _csv(p, label=lambda i: "jogging")
    else:
        _csv(p)
        lines = p.read_text().splitlines()
        lines[5] = lines[5].replace(lines[5].split(",")[2], "nan", 1)
        p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as e:
        read_imu_csv(p, labels=LABELS)
    assert message in str(e.value) and str(p) in str(e.value)


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "edgeseq", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli_bad_csv_one_line_error_no_traceback(tmp_path):
    p = _csv(tmp_path / "slow.csv", rate=25.0)
    r = _cli("demo", "har", "--target", "x86", "--input", str(p), "--out", str(tmp_path / "out"), "--no-live")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("edgeseq: error")]
    assert len(err) == 1 and "25.0 Hz" in err[0] and "resample" in err[0]
    assert not (tmp_path / "out" / "demo.json").exists()


def test_cli_missing_toolchain_names_the_apt_package(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no qemu-aarch64 / cross compiler reachable
    r = _cli("demo", "har", "--target", "arm", "--out", str(tmp_path / "out"), "--no-live", env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "apt-get install" in r.stderr and ("aarch64" in r.stderr)
    assert not (tmp_path / "out").exists()


def test_cli_compare_with_a_model_of_other_inputs_is_a_typed_error(tmp_path):
    r = _cli("demo", "har", "--target", "x86", "--compare", "kws_lmu", "--out", str(tmp_path / "out"), "--no-live")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("edgeseq: error")]
    assert len(err) == 1 and "'kws_lmu' takes 40 input features" in err[0]
    assert not (tmp_path / "out" / "demo.json").exists()
