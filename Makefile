# The two commands that matter on a fresh machine:
#   make scan DIR=~/Music    set up, then tag a music folder
#   make test                set up, then run the tests
VENV ?= .venv
PY := $(VENV)/bin/python
DIR ?= $(HOME)/Music
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system system-test venv scan test services bench clean

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

clean:
	rm -rf $(VENV) build dist *.egg-info
