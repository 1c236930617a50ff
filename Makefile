# edgeseq: the two commands of the README. Both do all set-up first (Debian toolchains + .venv).
.PHONY: setup demo test lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/edgeseq demo har --force

test: setup lint
	.venv/bin/python -m pytest -q -n auto --maxprocesses=4

lint: setup
	.venv/bin/ruff check edgeseq tests benchmarks scripts
	.venv/bin/ruff format --check edgeseq tests benchmarks scripts
	.venv/bin/mypy

bench: setup
	.venv/bin/python -m benchmarks.bench_parallel

clean:
	rm -rf .venv build *.egg-info .pytest_cache
