# xnat-fleet: the two entry points are `make demo` and `make test`; both set up a fresh
# Debian 12 machine first (scripts/bootstrap.sh: apt packages, .venv, base images).
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export CONTAINERS_CONF := $(CURDIR)/molecule/shared/containers.conf
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
INVENTORY ?= inventory/example
# Every role's scenario and the whole-stack scenarios (relay, central; alone: make molecule-stack).
STACK_SCENARIOS := relay central
ROLE_SCENARIOS := $(sort $(filter-out shared $(STACK_SCENARIOS),$(notdir $(wildcard molecule/*))))
# The longest first, so that the two slots of scripts/molecule-run.sh end together.
SCENARIOS ?= $(STACK_SCENARIOS) $(ROLE_SCENARIOS)
# Scenarios run side by side (each has its own network, addresses and containers).
MOLECULE_JOBS ?= 2

.PHONY: bootstrap demo demo-down demo-test test check lint unit image-test molecule molecule-stack

bootstrap:
	@bash scripts/bootstrap.sh

# The lab's XNAT REST API is the tests' stand-in (XNAT cannot be downloaded here); every plan
# printed against it says so. First the plan on fresh sites (incl. the Xsync pairings), then the
# whole site.yml (host stack + XNAT configuration), then a plan that must be empty.
demo: bootstrap
	xnat-fleet check -i $(INVENTORY)
	xnat-fleet lab up -i $(INVENTORY)
	xnat-fleet xnat plan -i $(INVENTORY) --lab
	xnat-fleet provision -i $(INVENTORY) --lab
	xnat-fleet xnat plan -i $(INVENTORY) --lab --detailed-exitcode
	xnat-fleet xsync status -i $(INVENTORY) --lab
	xnat-fleet image build -i $(INVENTORY) --profile nuc --standins
	xnat-fleet image show build/images/prism-relay-nuc-latest
	xnat-fleet image build -i $(INVENTORY) --profile supermicro --standins
	xnat-fleet image clone -i $(INVENTORY) relay-kings relay-leeds
	rm -f build/demo/relay-kings.disk && mkdir -p build/demo && truncate -s 6G build/demo/relay-kings.disk
	xnat-fleet image write build/clones/relay-kings-latest --device build/demo/relay-kings.disk --allow-standins
	xnat-fleet image verify build/clones/relay-kings-latest --device build/demo/relay-kings.disk
	xnat-fleet image boot build/demo/relay-kings.disk
	xnat-fleet image registry -i $(INVENTORY)

demo-down: bootstrap
	xnat-fleet lab down -i $(INVENTORY)

lint: bootstrap
	ruff check src tests benchmarks plugins roles/storage/files
	ruff format --check src tests benchmarks plugins roles/storage/files
	mypy
	yamllint -s .
	ansible-lint --profile production

unit: bootstrap
	pytest -q -m "not image"

# The relay image tier (docs/images.md): builds the example study's golden NUC image (base root,
# the relay roles' converge, seal, assemble, package, audit), checks its invariants and boots it
# twice under QEMU.
image-test: bootstrap
	pytest -q -m image

molecule: bootstrap
	@bash scripts/molecule-run.sh -j $(MOLECULE_JOBS) $(SCENARIOS)

# The demo as a test: two provisions of the example's lab, the second must change nothing.
# Not part of `make test`: with the whole stack on three containers it takes ~25 min, and the
# relay and central scenarios already converge the same playbooks twice (idempotence).
demo-test: bootstrap
	bash scripts/demo-idempotence.sh

molecule-stack: bootstrap
	@bash scripts/molecule-run.sh -j $(MOLECULE_JOBS) $(STACK_SCENARIOS)

# The fast tier (lint + unit tests); `make test` is everything and is what .ci/run runs.
check: lint unit

test: lint unit image-test molecule
