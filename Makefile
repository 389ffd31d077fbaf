PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
QS := quickstart

.PHONY: venv quickstart test lint bench clean

# (Re)install when pyproject.toml changes. torch comes from the pip index configured on the machine.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,plot,postgres,tensorboard,wandb]'
	touch $@

venv: $(VENV)/.installed

quickstart: venv
	mkdir -p $(QS)
	$(BIN)/kdrun --db sqlite:///$(QS)/kdrun.db --runs-dir $(QS)/runs enqueue --grid grids/quickstart.yaml
	$(BIN)/kdrun --db sqlite:///$(QS)/kdrun.db --runs-dir $(QS)/runs worker --cpu --until-empty
	$(BIN)/kdrun --db sqlite:///$(QS)/kdrun.db --runs-dir $(QS)/runs report --table top1
	$(BIN)/kdrun --db sqlite:///$(QS)/kdrun.db --runs-dir $(QS)/runs report --table delta
	$(BIN)/kdrun --db sqlite:///$(QS)/kdrun.db --runs-dir $(QS)/runs report --table agreement

lint: venv
	$(BIN)/ruff check kdrun tests benchmarks

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(QS) .pytest_cache
