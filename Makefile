# The two commands of the README:  `make demo`  and  `make test`.
.PHONY: install demo test test-fast test-slow lint bench lock clean

install:
	./scripts/install.sh

demo: install
	.venv/bin/l04 demo

# Two pytest processes (pytest-xdist), each taking whole test files (module-scoped fleets stay
# one per module): the fleet tier mostly waits on processes and sockets.
PYTEST_PARALLEL = -n 2 --dist loadfile

test: install lint
	.venv/bin/python -m pytest $(PYTEST_PARALLEL)

# The fast tiers (about a minute): tests/unit (no Redis) and tests/redis (a real redis-server,
# no worker). `make test` runs them and tests/fleet (real workers).
test-fast: install lint
	.venv/bin/python -m pytest $(PYTEST_PARALLEL) tests/unit tests/redis

# The slow tier (about 5 minutes): jobs outliving RabbitMQ's consumer_timeout (150 s and 20 s),
# a worker through a 30 s Redis outage, and the kill loops (the worker SIGKILLed ten times, Redis
# restarted three times, under load). CI runs it too.
test-slow: install
	.venv/bin/python -m pytest -m slow

lint:
	.venv/bin/ruff check --no-cache .
	.venv/bin/ruff format --no-cache --check .
	.venv/bin/mypy
	.venv/bin/lint-imports

bench: install
	.venv/bin/python -m benchmarks.run
	.venv/bin/python -m benchmarks.cache_lookup
	.venv/bin/python -m benchmarks.processes

# After a green run on newer versions: record them as the tested set (constraints.txt).
lock:
	{ grep '^#' constraints.txt; \
	  .venv/bin/python -m pip freeze --exclude-editable | grep -v '^l04-model-gateway'; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf .venv test-artifacts .pytest_cache .mypy_cache .ruff_cache
