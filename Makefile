# edgeseq: the two commands of the README. Both do all set-up first (Debian toolchains + .venv).
.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/edgeseq demo har --force

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python -m benchmarks.bench_parallel

clean:
	rm -rf .venv build *.egg-info .pytest_cache
