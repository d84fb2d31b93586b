# The two commands that matter on a fresh machine:
#   make scan DIR=~/Music    set up, then tag a music folder
#   make test                set up, then run the tests
VENV ?= .venv
PY := $(VENV)/bin/python
DIR ?= $(HOME)/Music
# whether an image registry answers (then the images build on python:3.11-slim as anywhere else)
PODMAN_PULLS := timeout 60 podman --runtime runc --cgroup-manager=cgroupfs pull -q python:3.11-slim >/dev/null 2>&1
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system system-test venv scan test services bench clean cluster-system test-cluster

setup: system venv

# ffmpeg (test fixtures, damaged-stream fallback) and sox (with its MP3 reader) are not on a fresh machine
system:
	@command -v ffmpeg >/dev/null && sox -h 2>/dev/null | grep -q 'FORMATS:.* mp3' || \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq ffmpeg sox libsox-fmt-mp3 >/dev/null )

# the tests also drive the HTML report in a real browser; tagging never needs one
system-test: system
	@command -v chromium >/dev/null || \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null )

# the distribution was called tagger before it was genre-tagger: the old one goes, not to be a second copy
$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	-$(PY) -m pip uninstall -q -y tagger 2>/dev/null
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

scan: setup
	$(VENV)/bin/tagger scan "$(DIR)"

services:
	bash .ci/services

test: system-test venv services
	$(PY) -m pytest -q

# the container deployment of docker/ (README: Run on several machines): podman with runc, a
# Debian base image made from Debian's packages where no image registry is reachable
cluster-system:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq podman runc debootstrap >/dev/null )

# builds the images, runs a cluster of containers through faults, measures 2 and 4 workers (about 20 min)
test-cluster: system venv cluster-system
	@$(PODMAN_PULLS) || $(SUDO) docker/base-image.sh
	TAGGER_TEST_CLUSTER=1 $(PY) -m pytest -q -s -p no:cacheprovider tests/test_cluster.py

clean:
	rm -rf $(VENV) build dist *.egg-info
