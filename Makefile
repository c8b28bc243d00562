# sluice: `make test` is the one test command (CI runs it through .ci/run).
# See README.md, "Testing", for where the Redis and PostgreSQL servers come from.

FUZZTIME ?= 10s

.PHONY: test test-386 test-bench fmt-check fuzz bench bench-quick demo

# Vet, then every test with the race detector, in random order.
test:
	go vet ./...
	go test -race -shuffle=on -count=1 -timeout 15m ./...

# The same on a 32-bit platform (no race detector there), to catch 64-bit
# assumptions in the integer arithmetic. A kernel built without 32-bit
# support cannot run the test binaries ("exec format error"): there they
# are only compiled, and a line says so.
test-386:
	GOARCH=386 go vet ./...
	@if GOARCH=386 go test -count=1 -run '^$$' ./internal/typednil >/dev/null 2>&1; then \
		echo "GOARCH=386 go test -count=1 -timeout 15m ./..."; \
		GOARCH=386 go test -count=1 -timeout 15m ./...; \
	else \
		echo "test-386: this kernel cannot run 386 binaries; compiling the tests for 386 without running them"; \
		GOARCH=386 go test -count=1 -exec /bin/true ./... >/dev/null; \
	fi

# The bench module's own tests (the table tool, the latency histogram, the
# store-call counter): no benchmark runs and no server is needed. The peers
# it compares with are downloaded on the first run.
test-bench:
	cd bench && go vet ./... && go test -count=1 ./...

# Fail when a file is not gofmt-clean.
fmt-check:
	@files=$$(gofmt -l .); \
	if [ -n "$$files" ]; then echo "not gofmt-clean:"; echo "$$files"; exit 1; fi

# Run every Fuzz target found in the root module for FUZZTIME each.
fuzz:
	@set -e; \
	for file in $$(grep -rl --include='*_test.go' --exclude-dir=bench '^func Fuzz' . | sort); do \
		for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
			echo "go test -run '^\$$' -fuzz '^$$target\$$' -fuzztime $(FUZZTIME) $$(dirname $$file)"; \
			go test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$(dirname $$file); \
		done; \
	done

# Benchmarks: the peer comparison in bench/ once it exists, else the root
# module's own. The comparison runs the whole suite BENCH_RUNS times, one
# run after the other (so every contender meets the same conditions),
# keeps the raw output in bench/last-run.txt and prints one table per
# backend with the medians. Every other run takes the contenders of each
# case in reverse order (SLUICE_BENCH_ROUND), so that no contender always
# runs first or last. bench-quick is a one-minute look.
BENCH_RUNS ?= 5
BENCH_TIME ?= 500ms

bench:
	@if [ -f bench/go.mod ]; then \
		cd bench && go test -c -o bench.test . && \
		for i in $$(seq $(BENCH_RUNS)); do \
			echo "run $$i of $(BENCH_RUNS): SLUICE_BENCH_ROUND=$$((i - 1)) ./bench.test -test.run '^\$$' -test.bench . -test.benchmem -test.benchtime $(BENCH_TIME)" >&2; \
			SLUICE_BENCH_ROUND=$$((i - 1)) ./bench.test -test.run '^$$' -test.bench . -test.benchmem -test.benchtime $(BENCH_TIME); \
		done | tee last-run.txt && \
		echo && go run ./cmd/benchtable < last-run.txt; \
	else \
		echo "go test -run '^\$$' -bench . -benchmem ./..."; \
		go test -run '^$$' -bench . -benchmem ./...; \
	fi

bench-quick:
	@$(MAKE) --no-print-directory bench BENCH_RUNS=1 BENCH_TIME=100ms

# Start examples/httpserver on its default store (a bbolt file in a fresh
# temporary directory), send 7 requests with curl, print each answer (5
# allowed, then 429s) and stop the server.
demo:
	@sh examples/httpserver/demo.sh
