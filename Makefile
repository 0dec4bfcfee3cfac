# Two set-up commands on a fresh Debian 12 machine (as root): `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: deps test unit demo lab-up lab-down bench clean

deps:
	./scripts/install-deps

# Every test: pure unit tests first (fast), then the lab tests.
test: deps
	./scripts/run-tests

unit: deps
	python -m pytest tests/unit -q

demo: deps
	./scripts/demo

lab-up: deps
	ansible-playbook playbooks/lab_up.yml

lab-down: deps
	ansible-playbook playbooks/lab_down.yml

bench: deps
	./scripts/run-bench

clean:
	rm -rf .collections .pytest_cache tests/output
