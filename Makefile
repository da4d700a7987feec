GO       ?= go
# FUZZTIME, if set (e.g. 1m), replaces every target's execution budget below.
FUZZTIME ?=
DATA_DIR ?= ./data
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)

# Versions of the protoc plugins that generated the committed code.
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0

# Every fuzz target, as package:target:budget. Budgets count executions, a
# few seconds' worth each: a -fuzztime duration can fail a run that found
# nothing when the deadline races a worker (go.dev/issue/75804, Go < 1.27).
FUZZ_TARGETS := \
	./internal/otlpwire:FuzzParse:30000x \
	./internal/otlpjson:FuzzDecodeRequest:20000x \
	./internal/otlpjson:FuzzTranscode:30000x \
	./ingest:FuzzDecompress:20000x \
	./internal/histogram:FuzzDecode:30000x \
	./storage/internal/keys:FuzzKeys:30000x \
	./index:FuzzSegment:100000x \
	./query:FuzzFit:30000x \
	./query:FuzzAppendString:20000x \
	./query/analysis:FuzzNameShape:50000x \
	./storage/internal/codec:FuzzFragment:30000x \
	./storage/internal/codec:FuzzSplitFields:30000x \
	./storage/internal/codec:FuzzRecords:30000x \
	./storage/internal/codec:FuzzServiceGraph:30000x \
	./storage/internal/codec:FuzzAggregate:30000x \
	./storage/internal/wal:FuzzReplay:30000x

.PHONY: all build run test unit fuzz bench proto screenshots clean test-jaeger

all: build

## build: compile bin/cairn
build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/cairn ./cmd/cairn

## run: build and serve with the store in $(DATA_DIR)
run: build
	./bin/cairn serve --data-dir $(DATA_DIR)

## test: vet, every test with the race detector, then each fuzz target briefly
test: unit fuzz

unit:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; budget=$${rest##*:}; \
		budget=$(if $(FUZZTIME),$(FUZZTIME),$$budget); \
		echo "fuzz $$pkg $$name ($$budget)"; \
		$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$$budget $$pkg; \
	done

## test-jaeger: build Jaeger v2 from its Go module (.ci/jaeger; minutes the
## first time) and run README.md's Jaeger configuration against cairn
test-jaeger:
	cd .ci/jaeger && $(GO) build -o ../../bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger
	CAIRN_JAEGER=$(CURDIR)/bin/jaeger $(GO) test -tags jaeger -count=1 -run '^TestJaegerOnCairn$$' -v ./cmd/cairn

## bench: Go benchmarks of the hot paths (compare runs with benchstat)
bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./...

## proto: regenerate query/jaegerpb and query/analysispb from their .proto files (needs protoc)
proto:
	$(GO) install $(PROTOC_GEN_GO)
	$(GO) install $(PROTOC_GEN_GO_GRPC)
	$(GO) run ./query/jaegerpb/internal/otlpdesc > query/jaegerpb/otlp.binpb.tmp
	cd query/jaegerpb && PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc \
		--descriptor_set_in=otlp.binpb.tmp -I . \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		trace_storage.proto capabilities.proto dependency_storage.proto
	cd query/analysispb && PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc \
		--descriptor_set_in=../jaegerpb/otlp.binpb.tmp -I . \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		analysis.proto rootcause.proto
	rm -f query/jaegerpb/otlp.binpb.tmp

## screenshots: PNGs of the web UI's pages, over bench data, into internal/ui/screenshots (needs chromium)
screenshots:
	mkdir -p internal/ui/screenshots
	CAIRN_SCREENSHOTS=$(CURDIR)/internal/ui/screenshots $(GO) test -count=1 -run '^TestScreenshots$$' ./cmd/cairn

clean:
	rm -rf bin
