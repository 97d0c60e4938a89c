# shira-ort: the two commands a newcomer needs are `make demo` and `make test`.

GO ?= go

.PHONY: setup demo test test-race bench fuzz lint generate

## setup: fetch ONNX Runtime and the third-party test models into the user cache (idempotent)
setup:
	@bash scripts/setup-ort.sh
	@bash scripts/fetch-models.sh

## demo: set up, then switch adapters on the shipped tiny model and print outputs and timings
demo: setup
	$(GO) run ./cmd/shira-ort demo

## test: set up, then run every test (CI runs exactly this)
test: setup
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -race -run 'Concurrent|Race' ./ort/ ./test/

## bench: the switch and Run benchmarks quoted in the README
bench: setup
	$(GO) test -run '^$$' -bench . -benchtime 20x ./patch/ ./test/

## generate: regenerate committed generated code (flatbuffers, ORT API indices)
generate:
	$(GO) generate ./...
