"""WAV input/output and resampling with no dependency beyond numpy/scipy.

16-bit PCM goes through the stdlib :mod:`wave` module; 32-bit IEEE-float WAV (format 3, which
``wave`` does not handle) and streamed headers with placeholder sizes (as ``espeak-ng --stdout``
writes them) are handled by a small RIFF reader. Audio is float32 in [-1, 1], shape (n,) for mono or
(n, channels). Writes are atomic.
"""

from __future__ import annotations

import io
import os
import struct
import wave
from math import gcd
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DatasetError
from ..util.fs import atomic_write_bytes

_PCM = 1
_FLOAT = 3
_EXTENSIBLE = 0xFFFE


def _sox_hint(path: str, rate: int | None, channels: int | None) -> str:
    src = path or "in.wav"
    dst = (Path(src).with_name(Path(src).stem + "_fixed.wav").as_posix()) if path else "out.wav"
    args = (f" -r {rate}" if rate else "") + (f" -c {channels}" if channels else "")
    return f"convert it with: sox {src}{args} {dst}"


def parse_wav_bytes(data: bytes, where: str = "<bytes>") -> tuple[np.ndarray, int]:
    """Decode a WAV file image: (float32 (n, channels), sample_rate).

    Accepts PCM 8/16/24/32-bit and IEEE float 32/64-bit, plain or WAVE_FORMAT_EXTENSIBLE. A data
    chunk whose declared size runs past the end of the image (streamed output) is read to the end.
    """
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        raise DatasetError("not a RIFF/WAVE file", where=where)
    if data[:4] == b"RIFX":
        raise DatasetError(
            "big-endian RIFX wav files are not supported", where=where, hint=_sox_hint(where, None, None)
        )
    pos = 12
    fmt = None
    payload = None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise DatasetError("truncated fmt chunk", where=where)
            tag, ch, rate, _brate, _align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, ch, rate, bits)
        elif cid == b"data":
            payload = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None or payload is None:
        raise DatasetError("missing fmt or data chunk", where=where)
    tag, ch, rate, bits = fmt
    if ch < 1:
        raise DatasetError("wav declares zero channels", where=where)
    width = bits // 8
    n = len(payload) // (width * ch)
    payload = payload[: n * width * ch]
    if tag == _PCM and bits == 16:
        x = np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32768.0
    elif tag == _PCM and bits == 8:
        x = (np.frombuffer(payload, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif tag == _PCM and bits == 24:
        b = np.frombuffer(payload, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        x = v.astype(np.float32) / float(1 << 23)
    elif tag == _PCM and bits == 32:
        x = (np.frombuffer(payload, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    elif tag == _FLOAT and bits == 32:
        x = np.frombuffer(payload, dtype="<f4").astype(np.float32)
    elif tag == _FLOAT and bits == 64:
        x = np.frombuffer(payload, dtype="<f8").astype(np.float32)
    else:
        raise DatasetError(
            f"unsupported wav encoding (format tag {tag}, {bits} bits)",
            where=where,
            hint="convert it with: sox in.wav -b 16 -e signed-integer out.wav",
        )
    return x.reshape(n, ch), int(rate)


def read_wav(
    path: str | os.PathLike, *, sample_rate: int | None = None, channels: int | None = 1, mono: bool = True
) -> tuple[np.ndarray, int]:
    """Read a WAV file: (float32 audio, sample_rate).

    With ``sample_rate``/``channels`` given, a file with another rate or channel count raises
    :class:`~edgeseq.errors.DatasetError` naming the file and the ``sox`` command that converts it.
    Mono audio is returned as (n,) when ``mono`` is true, otherwise (n, channels).
    """
    path = str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            f.seek(0)
            data = None
            if _is_plain_pcm16(head):
                try:
                    with wave.open(f, "rb") as w:
                        ch, rate, nframes = w.getnchannels(), w.getframerate(), w.getnframes()
                        raw = w.readframes(nframes)
                    x = (np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0).reshape(-1, ch)
                except (wave.Error, EOFError, ValueError):
                    f.seek(0)
                    data = f.read()
            else:
                data = f.read()
    except OSError as e:
        raise DatasetError(f"cannot read ({e.strerror})", where=path) from None
    if data is not None:
        x, rate = parse_wav_bytes(data, where=path)
        ch = x.shape[1]
    if sample_rate is not None and rate != sample_rate:
        raise DatasetError(
            f"sample rate is {rate} Hz, expected {sample_rate} Hz",
            where=path,
            hint=_sox_hint(path, sample_rate, channels),
        )
    if channels is not None and ch != channels:
        raise DatasetError(
            f"has {ch} channels, expected {channels}", where=path, hint=_sox_hint(path, sample_rate, channels)
        )
    if mono and ch == 1:
        return x[:, 0].copy(), rate
    return x, rate


def _is_plain_pcm16(head: bytes) -> bool:
    if len(head) < 36 or head[:4] != b"RIFF" or head[8:16] != b"WAVEfmt ":
        return False
    tag, _ch, _rate, _br, _al, bits = struct.unpack("<HHIIHH", head[20:36])
    return tag == _PCM and bits == 16 and struct.unpack("<I", head[4:8])[0] < 0x7FFF0000


def wav_bytes(audio: np.ndarray, sample_rate: int, *, subtype: str = "PCM_16") -> bytes:
    """Encode float audio (n,) or (n, channels) as a WAV image: ``"PCM_16"`` (clipped to [-1, 1]) or ``"FLOAT"``."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ConfigError(f"audio must be (n,) or (n, channels), got {x.shape}", where="write_wav")
    if not np.isfinite(x).all():
        raise ConfigError("audio contains NaN or Inf", where="write_wav")
    n, ch = x.shape
    if subtype == "PCM_16":
        pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(ch)
            w.setsampwidth(2)
            w.setframerate(int(sample_rate))
            w.writeframes(pcm.tobytes())
        return buf.getvalue()
    if subtype == "FLOAT":
        payload = x.astype("<f4").tobytes()
        fmt = struct.pack("<HHIIHH", _FLOAT, ch, int(sample_rate), int(sample_rate) * ch * 4, ch * 4, 32)
        fact = struct.pack("<I", n)
        body = (
            b"WAVE"
            + b"fmt "
            + struct.pack("<I", len(fmt))
            + fmt
            + b"fact"
            + struct.pack("<I", 4)
            + fact
            + b"data"
            + struct.pack("<I", len(payload))
            + payload
        )
        return b"RIFF" + struct.pack("<I", len(body)) + body
    raise ConfigError(f"unknown wav subtype '{subtype}'; choose PCM_16 or FLOAT", where="write_wav")


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, *, subtype: str = "PCM_16") -> Path:
    """Write ``audio`` to ``path`` atomically (see :func:`wav_bytes` for the encodings)."""
    return atomic_write_bytes(path, wav_bytes(audio, sample_rate, subtype=subtype))


def resample(audio: np.ndarray, orig_rate: int, target_rate: int, axis: int = 0) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``, Kaiser window) from ``orig_rate`` to ``target_rate``."""
    if orig_rate <= 0 or target_rate <= 0:
        raise ConfigError(f"sample rates must be positive, got {orig_rate} -> {target_rate}", where="resample")
    x = np.asarray(audio, dtype=np.float32)
    if orig_rate == target_rate:
        return x.copy()
    from scipy.signal import resample_poly

    g = gcd(int(target_rate), int(orig_rate))
    up, down = int(target_rate) // g, int(orig_rate) // g
    return resample_poly(x.astype(np.float64), up, down, axis=axis).astype(np.float32)
