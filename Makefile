# Two commands on a fresh machine:  make quickstart  (a small study + its front)  and  make test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Real MNIST files when this checkout sits beside a shared data folder, else ./data (downloaded).
DATA_ROOT ?= $(if $(wildcard ../shared/data/MNIST/raw),../shared/data,data)
STORAGE ?= rvsm-studies

.PHONY: install quickstart test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

quickstart: install
	$(BIN)/rvsm run studies/quickstart.toml --set train.data_root="$(DATA_ROOT)" --set study.storage="$(STORAGE)" --fresh
	$(BIN)/rvsm pareto $(STORAGE)/quickstart -o $(STORAGE)/quickstart/front.png --references mnist_lenet5
	@echo "front: $(STORAGE)/quickstart/front.png"

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) *.egg-info
