# Two commands do everything on a fresh machine: `make train` and `make test`.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: setup train test lint clean

setup: $(STAMP)

# Re-installs only when requirements.txt changes. hydra-optuna-sweeper 1.3.0 pins optuna<3, whose
# sqlite storage breaks on SQLAlchemy 2, so it goes in with --no-deps next to optuna>=4.7.
$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps hydra-optuna-sweeper==1.3.0
	touch $(STAMP)

train: setup
	$(PY) train.py

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
