# Everything runs from the virtual environment at .venv (created on first use).
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: setup run test test-quick lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps tinysoundfont==0.3.7  # SF2 renderer of scripts/make_stems.py (not its pyaudio)
	touch $(STAMP)

# the reference implementation (walloc 1.2.1, no deps: it would pull torchvision) for side-by-side benchmarks
.venv/.bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m pip install -q --no-deps walloc==1.2.1
	touch .venv/.bench

setup: $(STAMP)

## run: the main job on the embedded default (bundled sample corpus, bundled codec)
run: $(STAMP)
	$(PY) jobs/encode_imagenet.py

## test: lint + the whole test suite (what CI runs)
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n 2 -q

test-quick: $(STAMP)
	$(PY) -m pytest -n 2 -q -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: .venv/.bench
	$(PY) benchmarks/encode_speed.py

clean:
	rm -rf .venv .pytest_cache .ruff_cache
