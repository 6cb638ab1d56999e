# Two commands do everything (see README): `make demo` and `make test`.
VENV ?= .venv
OFFLINE = HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup demo test lint
setup:
	VENV=$(VENV) ./scripts/setup_venv.sh

# The main job: the tiny LaViDa embedder on the bundled MMEB-mini sample, offline, on CPU; prints the scores.
demo: setup
	$(OFFLINE) $(VENV)/bin/mmeb-dllm run -m lavida-embed-tiny -t MMEB-mini --output-folder results/demo --overwrite-strategy always

# The whole test suite (slow end-to-end tests included), against the installed package. The leaderboard's page test
# drives the distribution's Chromium, installed here if missing.
test: setup
	./scripts/install_chromium.sh
	$(OFFLINE) $(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/ruff check mmeb_dllm tests tasks
