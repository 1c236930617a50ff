"""HDF5 trees (NIR files), read within the caps."""

from __future__ import annotations

import io
from typing import Type

import numpy as np

from ...errors import EdgeseqError
from .files import read_file
from .limits import Budget, current_limits

# ----------------------------------------------------------------------------------------------
# HDF5 trees (NIR files)

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def read_hdf5_tree(
    path,
    error: Type[EdgeseqError],
    *,
    what: str = "HDF5 file",
    install: str = "pip install h5py",
    max_depth: int = 32,
    max_objects: int = 100_000,
    max_strings: int = 1 << 18,
) -> dict:
    """The groups of an HDF5 file as nested dicts of numpy arrays and strings.

    The file is read whole under the model cap and opened from memory; links that leave it (soft,
    external) and datasets stored elsewhere (virtual, external) are refused; each dataset's
    declared size is charged to the model budget before it is read, so compressed data cannot
    inflate past the cap; nesting depth and object count are bounded."""
    where = str(path)
    lim = current_limits()
    data = read_file(path, error, max_bytes=lim.model_bytes, what=what)
    if not data.startswith(HDF5_MAGIC):
        raise error(f"not an HDF5 file (no HDF5 signature at the start), so not a {what}", where=where)
    try:
        import h5py
    except ImportError:
        from ...errors import ToolchainMissingError

        raise ToolchainMissingError("h5py", install=install, purpose=f"reading {what}s") from None
    budget = Budget(lim.model_bytes, "model")
    count = [0]

    def group(g, at: str, depth: int) -> dict:
        if depth > max_depth:
            raise error(f"groups nested deeper than {max_depth} levels", where=f"{where}:{at}")
        out: dict = {}
        for key in g.keys():
            count[0] += 1
            if count[0] > max_objects:
                raise error(f"more than {max_objects} objects", where=where)
            here = f"{at}/{key}"
            link = g.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise error(f"{type(link).__name__} '{here}' points outside the file (refused)", where=where)
            item = g[key]
            if isinstance(item, h5py.Group):
                out[key] = group(item, here, depth + 1)
            elif isinstance(item, h5py.Dataset):
                out[key] = dataset(item, here)
            else:  # pragma: no cover - named datatypes
                raise error(f"'{here}' is neither a group nor a dataset", where=where)
        return out

    def dataset(d, at: str):
        if d.is_virtual or d.external:
            raise error(f"dataset '{at}' is stored outside the file (refused)", where=where)
        dt = d.dtype
        if h5py.check_string_dtype(dt) is not None or dt.kind in "SO":
            if d.size > max_strings:
                raise error(f"string dataset '{at}' holds {d.size} strings (at most {max_strings})", where=where)
            budget.take(int(d.size) * 256, f"dataset '{at}'", where, error)
            v = d[()]
            if isinstance(v, bytes):
                return v.decode("utf-8", "replace")
            return np.array(
                [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in np.ravel(v)], dtype=object
            ).reshape(np.shape(v))
        if dt.kind not in "biuf" or dt.itemsize > 8:
            raise error(f"dataset '{at}' has dtype {dt}; only numbers and strings are read", where=where)
        n = int(np.prod(d.shape, dtype=np.int64)) * dt.itemsize if d.shape is not None else 0
        budget.take(n, f"dataset '{at}' ({d.shape} {dt})", where, error)
        return np.asarray(d[()])

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            return group(f, "", 0)
    except EdgeseqError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise error(f"damaged {what} ({type(e).__name__}: {str(e)[:120]})", where=where) from None
