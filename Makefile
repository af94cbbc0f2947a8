# Two commands set up a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench lint install clean fuzz

$(STAMP): pyproject.toml setup.py emu/_native.c emu/_native_common.h probes/_native.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(MAKE) -s -C guest
	$(VENV)/bin/kprobe-emu demo

# pytest exits 5 when it collects no tests: treat that as a failure, not a pass.
# The whole suite on the native core when it is built, then the probe suites again
# on the pure-Python path (KPE_NATIVE=0), the reference.
test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	KPE_NATIVE=0 $(PY) -m pytest -q -p no:cacheprovider tests/probes tests/regress tests/emu/test_native.py; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$rc

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# The overhead benchmarks: table, benchmarks/results/results.{json,png}, then
# the targets check (exits non-zero when a ratio misses). Not part of `make test`.
bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.check

# Style and types (ruff, mypy); not part of `make test`.
lint: $(STAMP)
	$(PY) -m pip install --quiet ruff mypy
	$(VENV)/bin/ruff check emu probes kprobe_emu guest benchmarks tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info

# Long fuzz runs of tests/fuzz only (loader, syscalls, probes, probe language):
# FUZZ_EXAMPLES random examples per fuzz test, no deadlines; failures are kept in
# .hypothesis/fuzz and replayed first next time. `make test` runs the same tests
# with a small fixed budget. E.g. `make fuzz FUZZ_EXAMPLES=20000`.
FUZZ_EXAMPLES ?= 2000
fuzz: $(STAMP)
	KPE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider \
		--hypothesis-show-statistics tests/fuzz
