# One command per job; CI runs `make test`.
.PHONY: install demo test lint typecheck bench proto

install:
	bash deploy/local/install.sh

demo: install
	bash deploy/local/demo.sh

lint: install
	.venv/bin/ruff check farm workers web tests bench
	.venv/bin/ruff format --check farm workers web tests bench

typecheck: install
	.venv/bin/mypy

test: install lint typecheck
	bash deploy/local/run-tests.sh

proto:
	bash workers/buildkit/generate.sh

bench: install
	.venv/bin/python -m bench
