# The two commands of the README:  `make demo`  and  `make test`.
.PHONY: install demo test lint bench clean

install:
	./scripts/install.sh

demo: install
	.venv/bin/l04 demo

test: install lint
	.venv/bin/python -m pytest

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

bench: install
	.venv/bin/python -m benchmarks.run
	.venv/bin/python -m benchmarks.cache_lookup

clean:
	rm -rf .venv test-artifacts .pytest_cache .mypy_cache .ruff_cache
