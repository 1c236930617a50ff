"""``python -m benchmarks``: run the benchmark suite and render benchmarks/BENCHMARKS.md (see suite.py)."""

import os
import sys

# One thread everywhere, set before numpy / torch load their thread pools: on a shared 2-core machine,
# oversubscribed BLAS / intra-op threads made timings swing by 10x between runs.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TVM_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from benchmarks.suite import main  # noqa: E402

sys.exit(main())
