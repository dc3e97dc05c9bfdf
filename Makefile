# The two commands of the README: `make demo` and `make test`.
# Each does its own set-up: the virtualenv, the Python packages, and (as root on
# Debian) the system packages PostGIS, Chromium and a CJK font.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
APT_PACKAGES := chromium chromium-driver fonts-noto-cjk

.PHONY: demo test serve system clean plotly-bundle

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing with apt-get ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing system packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; fi; \
	fi

demo: $(STAMP)
	$(BIN)/gridwatch demo

serve: $(STAMP)
	$(BIN)/gridwatch serve

test: $(STAMP) system
	$(BIN)/pytest

# Rebuild the map-only plotly.js (committed; needed after a plotly upgrade). Needs node and npm.
plotly-bundle:
	cd dashboard/plotly_bundle && npm ci --no-audit --no-fund && node build.js

clean:
	-$(BIN)/gridwatch db stop
	rm -rf $(VENV) .gridwatch test-artifacts
