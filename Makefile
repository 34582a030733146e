# Two commands do everything on a fresh machine: `make train` and `make test`.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: setup train test test-fast test-slow test-avx2 test-readme test-cluster bench lint clean
# test processes (pytest-xdist)
JOBS ?= 2

setup: $(STAMP)

# Re-installs only when requirements.txt changes. tune.py's sweeper is our own (src/sweeps/);
# the released hydra-optuna-sweeper, which older set-ups installed, would shadow its sampler
# configs (hydra/sweeper/sampler), so it is removed.
$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip uninstall --quiet --yes hydra-optuna-sweeper 2>/dev/null || true
	touch $(STAMP)

train: setup
	$(PY) train.py

# The suite but its slowest end-to-end tests (test-slow), the README's commands (test-readme)
# and the SLURM cluster (test-cluster); CI runs all four.
test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(JOBS) --dist loadgroup -m "not slow and not readme and not cluster"

# The end-to-end tests marked slow (killed and restarted searches, pruners in other processes,
# torchrun and submitit): about 7 minutes.
test-slow: setup
	$(PY) -m pytest -q -n $(JOBS) --dist loadgroup -m "slow and not readme and not cluster"

# The unit tests (tests/unit: every module, in process) and the end-to-end tests marked smoke
# (each entry point once); under 5 minutes on 2 cores.
test-fast: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(JOBS) --dist loadgroup -m "not slow and not readme and not cluster and (not e2e or smoke)"

# The unit tests again on the AVX2 kernels (torch's ATEN_CPU_CAPABILITY), as an AVX2-only CPU
# runs them: a test that holds only on this machine's kernels fails here first. About 2 minutes.
test-avx2: setup
	ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest -q -n $(JOBS) --dist loadgroup -m "not slow and not readme and not cluster" tests/unit

# Every shell command of README.md, run as typed in a scratch workspace (tests/e2e/test_readme.py).
test-readme: setup
	$(PY) -m pytest -q -m readme tests/e2e/test_readme.py

# The cluster path on a real one-node SLURM cluster that the tests start from Debian's slurmctld,
# slurmd, slurmdbd, munge and mariadb-server (tests/helpers/slurm.py; .ci/run installs them, and
# without them the tests skip saying why): about 5 minutes.
test-cluster: setup
	$(PY) -m pytest -q -m cluster tests/e2e/test_slurm.py

# The CPU benchmark suite (about 20 minutes): JSON in benchmarks/results/cpu/, the table in
# benchmarks/README.md.
bench: setup
	$(PY) benchmarks/suite.py

lint: setup
	$(PY) -m ruff check .

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
