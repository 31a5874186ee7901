# The README's two commands. Each creates .venv when missing and installs what it needs.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ttfs-installed

.PHONY: demo test setup lint typecheck clean docs docs-serve notebooks

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-pinned.txt requirements-docs.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-pinned.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements-pinned.txt -e ".[all,dev]"
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-docs.txt
	touch $(STAMP)

# Main job: train a TTFS MLP on scikit-learn's digits and print accuracy and efficiency figures.
demo: $(STAMP)
	$(VENV)/bin/ttfs train --dataset digits --epochs 30 --out runs/demo --overwrite

# The type check runs first: a type error fails `make test` (and CI) before pytest starts.
# pytest exits 5 when it collects no tests: that fails here too ("no tests ran" is red).
test: typecheck
	$(PY) -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: no tests ran" >&2; fi; exit $$status

# mypy over the package, as configured in pyproject.toml ([tool.mypy]).
typecheck: $(STAMP)
	$(VENV)/bin/mypy ttfs_plugin

lint: $(STAMP)
	$(VENV)/bin/ruff check ttfs_plugin tests examples benchmarks

# The documentation site (MkDocs Material + mkdocstrings) into site/.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP)
	$(VENV)/bin/mkdocs serve

# Refresh the stored outputs of the tutorial notebooks (SMALL=1 runs).
notebooks: $(STAMP)
	for f in examples/[0-9][0-9]_*.py; do SMALL=1 $(VENV)/bin/jupytext --to ipynb --execute $$f || exit 1; done

clean:
	rm -rf runs .pytest_cache .mypy_cache site
