# The two quick-start commands: `make book` and `make test`. Both create .venv (Python >= 3.10) and
# install the package with its book and dev extras when .venv is missing or pyproject.toml changed.
#   make book            default experiments (preset quick) on the built-in scenes, then _build/html
#   make book TABLES=all     every table sweep at that preset, not only Table 1's (quick: about 38 min)
#   make book PRESET=smoke   the same in seconds (the tests' preset)
#   make test            pytest (all tests, slow ones included; `make test-fast` skips those)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PRESET ?= quick
JOBS   ?= 2
# The table sweeps make book runs at $(PRESET). By default Table 1's (the paper's headline comparison: ten
# pretraining runs at quick), so that make book stays within 30 minutes on 2 CPU cores: a quick run takes
# 29-109 s two at a time, about 20 s of it fixed cost (measured alone: a kernel, a trainer process, the
# random-init and final probes; the shortest run trains for 4.5 s of its 26), and all seven sweeps (34 runs
# and 35 transfer runs) take about 31 minutes (2 cores, quick preset on scenes v3: table sweeps 25.6 min,
# transfer about 5.5), about 38 with the chapters and the install. The chapters of the other tables show the
# committed reference results either way. TABLES=all: every one; or name some, e.g. TABLES="table1 table2".
ALL_TABLES := table1 table2 table12_13 table11 table14 table15 table10
TABLES ?= table1
ifeq ($(TABLES),all)
override TABLES := $(ALL_TABLES)
endif

.PHONY: install test test-fast experiments book notebooks bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "coarsecrop needs Python >= 3.10; '$(PYTHON)' is older: run make PYTHON=python3.X ..." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[book,dev]'
	# papermill and JupyterLab need a kernelspec named python3 that runs this venv's Python
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (coarsecrop)"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# The table sweeps $(TABLES) (params/sweeps/tableN.yaml) at $(PRESET), $(JOBS) runs at once (runs shared
# between tables run once; complete runs are reused), then the transfer sweep on the trunks they made (mAP^l,
# params/sweeps/transfer.yaml --of each of them); then every notebook the book shows, with
# params/$(PRESET)/NN_topic.yaml, into runs/NN_topic/<run-id>/, copied to book/generated/ for the book.
experiments: $(STAMP)
	@for sweep in $(TABLES); do \
		$(BIN)/coarsecrop sweep params/sweeps/$$sweep.yaml --preset $(PRESET) --jobs $(JOBS) || exit 1; \
	done
	$(BIN)/coarsecrop sweep params/sweeps/transfer.yaml --preset $(PRESET) --jobs $(JOBS) \
		$(foreach sweep,$(TABLES),--of $(sweep))
	$(BIN)/coarsecrop book run --preset $(PRESET)

# coarsecrop book build: jupyter-book with -W --keep-going --all (every warning reported, then failing the
# build; every page rebuilt, so a warning cannot hide behind an up-to-date page of an earlier build).
book: experiments
	$(BIN)/coarsecrop book build
	@# a screenshot of the landing page (the page index.html redirects to), only where a Chromium is
	@# installed; it never fails the build
	@chrome=$$(command -v chromium || command -v chromium-browser || command -v google-chrome || true); \
	page=$$(sed -n 's/.*url=\([^"]*\)".*/\1/p' _build/html/index.html | head -n 1); \
	if [ -n "$$chrome" ]; then \
		timeout 120 "$$chrome" --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1000 \
			--screenshot="$(CURDIR)/_build/landing.png" "file://$(CURDIR)/_build/html/$${page:-index.html}" \
			>/dev/null 2>&1 && echo "Landing page screenshot: _build/landing.png" \
			|| echo "(no landing page screenshot: $$chrome failed)"; \
	fi

# Paired .ipynb files for JupyterLab (jupytext.toml pairs notebooks/*.py with notebooks/*.ipynb).
notebooks: $(STAMP)
	$(BIN)/jupytext --sync notebooks/[0-9][0-9]_*.py

bench: $(STAMP)
	$(BIN)/python benchmarks/crop_speed.py
	$(BIN)/python benchmarks/pretrain_speed.py
	$(BIN)/python benchmarks/eval_speed.py
	$(BIN)/python benchmarks/scenes_speed.py

clean:
	rm -rf _build book/generated notebooks/*.ipynb
	@echo "runs/ is kept (experiment results); remove it by hand to rerun everything"
