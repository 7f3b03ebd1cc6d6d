# The two commands: `make demo` and `make test`. Each sets up what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBIAN_FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test install data speed clean

# A fresh folder, not the committed reference run in results/demo: there every cell has its records,
# so the bench would skip them all and only redraw the report.
DEMO_OUT ?= results/demo-local

demo: install data
	$(BIN)/ctxenc bench benchmarks/demo.yaml --launcher local --workers 2 --out $(DEMO_OUT)

# Two one-thread pytest workers (pytest-xdist): torch's own threads would spin-wait on each other.
# Tests are dealt one at a time (--maxschedchunk 1), slowest first (tests/conftest.py), so the
# long ones spread over both workers instead of landing in one worker's first chunk.
test: install data
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --maxschedchunk 1

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Fashion-MNIST, the embedded default: Debian's dataset-fashion-mnist package.
data:
	@if [ -n "$$CTXENC_DATA" ] || [ -f $(DEBIAN_FMNIST) ]; then \
		echo "Fashion-MNIST: found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist', or set CTXENC_DATA to a folder holding its four IDX .gz files."; \
		exit 2; \
	fi

speed: install
	$(BIN)/python benchmarks/speed_pretrain.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
