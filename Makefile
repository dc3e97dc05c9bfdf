# The two commands of the README: `make demo` and `make test`.
# Each does its own set-up: the virtualenv and the Python packages, and the system packages
# (gridwatch/system.py: installed with apt-get as root, named with the command otherwise).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SYSTEM := $(PYTHON) -I gridwatch/system.py
HOST   ?= 127.0.0.1
PORT   ?= 8050
# Test files run in this many processes side by side (each file whole, in one; one PostGIS for all).
TEST_WORKERS ?= 2

.PHONY: demo test serve clean plotly-bundle plan-bundle

$(STAMP): pyproject.toml
	@$(SYSTEM) venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	@$(SYSTEM) postgis
	@$(SYSTEM) fonts || echo "gridwatch: the map will have no labels until the font above is installed"
	@$(SYSTEM) report || echo "gridwatch: shift reports cannot be made until the font above is installed"
	$(BIN)/gridwatch demo --host $(HOST) --port $(PORT)

serve: $(STAMP)
	$(BIN)/gridwatch serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	@$(SYSTEM) postgis browser gis report pdf
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# Rebuild the map-only plotly.js (committed; needed after a plotly upgrade). Needs node and npm.
plotly-bundle:
	cd dashboard/plotly_bundle && npm ci --no-audit --no-fund && node build.js

# Rebuild the grid planner's MapLibre GL JS + terra-draw bundle (committed). Needs node and npm.
plan-bundle:
	cd dashboard/plan_bundle && npm ci --no-audit --no-fund && node build.js

clean:
	-$(BIN)/gridwatch db stop
	rm -rf $(VENV) .gridwatch test-artifacts
