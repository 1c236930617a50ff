"""Safe reading of files edgeseq did not write itself (or that may have been damaged since).

Every loader (IR graphs, checkpoints, quantization plans, artifact manifests, golden vectors, data
arrays, CSV / WAV recordings, JSON configs) reads through this package, so the same rules hold
everywhere:

- **bounded memory**: a file is never read whole before it is checked. Zip archives are opened only
  after their central directory is sized (member count, directory bytes); each member is inflated as
  a stream and stops at its cap, so a zip bomb costs no more than its cap. ``.npy`` members are read
  header first: dtype and shape are checked against what the enclosing document declares, and the
  declared size against the remaining budget, *before* the array is allocated;
- **one overall cap per file** (:class:`Limits`, configurable): the bytes inflated from one model,
  plan or checkpoint file (nested archives included) and from one data file;
- **structure before use**: JSON is parsed with duplicate keys, NaN / Infinity and absurd nesting
  refused, then checked against a schema (:mod:`edgeseq.util.schema`) by the caller;
- **paths stay inside**: a path read from a manifest or plan is resolved (symlinks too) and must stay
  inside its artifact directory (:func:`inside`).

Problems raise the caller's typed error (``error=``: IRFormatError, CheckpointError, ArtifactError,
DatasetError, ConfigError, ...) with a one-line message naming the file and the member.

Limits: ``EDGESEQ_MAX_MODEL_MB`` (default 128: bytes inflated from one model / plan / checkpoint /
artifact file), ``EDGESEQ_MAX_DATA_MB`` (default 2048: one data file), or in Python
``with safeio.limits(model_bytes=...)``.

Modules: :mod:`.limits` (caps and budgets), :mod:`.files` (plain files, paths inside an artifact),
:mod:`.jsonio`, :mod:`.npy`, :mod:`.zips` (zip archives, ``.npz``), :mod:`.tables` (CSV),
:mod:`.hdf5` (NIR files), :mod:`.guard` (address-space cap while building objects).
"""

from .files import inside, open_regular, read_file, read_text
from .guard import address_space_guard
from .hdf5 import read_hdf5_tree
from .jsonio import parse_json, read_json
from .limits import LIMIT_HINT, Budget, Limits, MiB, current_limits, human, limits
from .npy import NUMERIC_KINDS, read_npy, read_npy_stream
from .tables import read_csv_columns
from .zips import SafeZip, is_zip_with, npz_keys, read_npz

__all__ = [
    "Limits",
    "limits",
    "current_limits",
    "Budget",
    "SafeZip",
    "parse_json",
    "read_json",
    "read_file",
    "read_text",
    "read_npy",
    "read_npz",
    "npz_keys",
    "read_npy_stream",
    "inside",
    "open_regular",
    "is_zip_with",
    "human",
    "MiB",
    "LIMIT_HINT",
    "NUMERIC_KINDS",
    "address_space_guard",
    "read_hdf5_tree",
    "read_csv_columns",
]
