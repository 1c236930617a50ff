# edgeseq: the two commands of the README. Both do all set-up first (Debian toolchains + .venv).
.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/python examples/quickstart.py

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python -m benchmarks.bench_parallel

clean:
	rm -rf .venv build *.egg-info .pytest_cache
