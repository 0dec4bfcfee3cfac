# Two set-up commands on a fresh Debian 12 machine (as root): `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: deps test unit mutation demo lab-up lab-down bench ee ee-test clean

deps:
	./scripts/install-deps

# Every test: pure unit tests first (fast), then the lab tests.
test: deps
	./scripts/run-tests

unit: deps
	python -m pytest tests/unit -q

# Mutation testing of plugins/module_utils/ with mutmut, one file at a time against its own unit
# tests (tests/mutation/mutation.cfg); results in tests/mutation/last-run.md. Not part of `make
# test`: each file takes up to its 15-minute limit, every file together hours on a loaded 2-core
# machine. `make mutation FILES="placement.py waves.py"` runs some.
mutation: deps
	./scripts/mutation $(FILES)

demo: deps
	./scripts/demo

lab-up: deps
	ansible-playbook playbooks/lab_up.yml

lab-down: deps
	ansible-playbook playbooks/lab_down.yml

bench: deps
	./scripts/run-bench

# The execution environment image, built with podman (scripts/ee-build; docs/awx.md).
EE_IMAGE ?= localhost/virtfleet-ee:$(shell sed -n 's/^version: *//p' galaxy.yml)
ee: deps
	./scripts/ee-build $(EE_IMAGE)

# Builds the image, then runs jobs in it against the lab (tests/lab/test_ee.py). Not part of
# `make test`: the build takes longer than CI's budget for it.
ee-test: ee
	VIRTFLEET_EE_IMAGE=$(EE_IMAGE) python -m pytest tests/lab/test_ee.py -ra

clean:
	rm -rf .collections .pytest_cache tests/output
