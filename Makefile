# The two quick-start commands: `make book` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PRESET ?= quick

.PHONY: install test book experiments bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null
	$(BIN)/python -m pip install -e '.[book,dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (coarsecrop)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The default experiments on the built-in synthetic scenes (preset $(PRESET)), then the HTML book.
experiments: $(STAMP)
	$(BIN)/python -m coarsecrop.book run --preset $(PRESET)

book: experiments
	$(BIN)/jupyter-book build . --path-output _build/.. -W --keep-going || $(BIN)/jupyter-book build .
	@echo "The book: _build/html/index.html"

bench: $(STAMP)
	$(BIN)/python benchmarks/crop_speed.py

clean:
	rm -rf _build runs book/generated
