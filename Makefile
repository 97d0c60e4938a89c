# shira-ort: the two commands a newcomer needs are `make demo` and `make test`.

GO ?= go
FUZZTIME ?= 5s

.PHONY: setup setup-ort setup-models demo test test-large bench fuzz arm64-test generate charlm

## setup: setup-ort and setup-models (idempotent)
setup: setup-ort setup-models

## setup-ort: fetch ONNX Runtime's shared library into the user cache (shira-ort setup; once)
setup-ort:
	@$(GO) run ./cmd/shira-ort setup

## setup-models: fetch the third-party models the tests use into the user cache (once)
setup-models:
	@bash scripts/fetch-models.sh

## demo: fetch ONNX Runtime, then switch SHiRA (and LoRA) adapters on the shipped text generator, printing samples
##       and switch times (the original tiny-MLP demo: go run ./cmd/shira-ort demo --model tiny)
demo: setup-ort
	$(GO) run ./cmd/shira-ort demo

## test: set up, then run every test (CI runs exactly this); the serving packages run whole under the race detector
test: setup
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	SHIRA_STRESS=1 $(GO) test -count=1 -race -run 'Concurrent|Race|Cancel|Close|Context|Retain' ./ort/ ./adapter/ ./patch/
	$(GO) test -count=1 -race ./sched/ ./registry/ ./serve/
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz-short.sh

## test-large: the 4.1 GB TinyLlama-shaped model (external data) in every session mode against the offline-fused
##             oracle, bit for bit (~4 min, up to ~17 GB RAM, ~17 GB of temporary disk); CI runs it after test
test-large: setup
	SHIRA_LARGE_TEST=1 $(GO) test -count=1 -timeout 30m -run 'TestLargeModelModes' -v ./internal/sessionbench/

## bench: the switch and Run benchmarks quoted in the README
bench: setup
	$(GO) test -run '^$$' -bench . -benchtime 20x ./patch/ ./test/

## fuzz: every fuzz target for FUZZTIME each (make fuzz FUZZTIME=5m for a long run)
fuzz:
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz-short.sh

## arm64-test: cross-build for linux/arm64 and run the core tests under qemu-user (not in CI: ~2-5 min)
arm64-test:
	bash scripts/arm64-test.sh

## generate: regenerate committed generated code (flatbuffers, ORT API indices)
generate:
	$(GO) generate ./...

## charlm: retrain the shipped text generator and its adapters (models/charlm, docs/charlm.md); about 16 min on a shared 2-core machine
charlm:
	/usr/bin/python3 models/charlm/gen_charlm.py
