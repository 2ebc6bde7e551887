# Set-up, serving and tests. Every target creates the virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EMBEDDING_MODEL_NAME ?= CLIP/clip-vit-b-16
# WEIGHTS=pretrained downloads the upstream weights on first import; WEIGHTS=random builds
# the same architecture with random weights (offline try-out, benchmarks).
WEIGHTS ?= pretrained
export BENTOML_DO_NOT_TRACK ?= true
export EMBEDDING_MODEL_NAME

IMPORT_FLAGS_pretrained :=
IMPORT_FLAGS_random := --random-weights

.PHONY: setup serve test test-fast mutation build clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

serve: setup
	$(BIN)/python -m models import $(EMBEDDING_MODEL_NAME) --if-missing $(IMPORT_FLAGS_$(WEIGHTS))
	$(BIN)/bentoml serve service:EmbeddingService

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not e2e"

# Named mutations, each of which its tests must catch (tests/mutation; about 15 minutes).
mutation: setup
	$(BIN)/python -m tests.mutation

build: setup
	$(BIN)/python -m models import $(EMBEDDING_MODEL_NAME) --if-missing $(IMPORT_FLAGS_$(WEIGHTS))
	$(BIN)/bentoml build --arg model=$(EMBEDDING_MODEL_NAME)

clean-venv:
	rm -rf $(VENV)
