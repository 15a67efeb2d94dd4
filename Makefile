# clock-server — developer and container tasks. `make help` lists them.

CARGO ?= cargo

.PHONY: help run test test-deps fmt lint build build-clockctl clean

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

run: ## run the server (configure with environment variables, see README)
	$(CARGO) run --release --bin clock-server

test: test-deps ## install test dependencies if missing, then run all tests
	$(CARGO) test --locked

test-deps: ## install Mosquitto and openssl when missing (Debian/Ubuntu)
	./scripts/install-test-deps.sh

fmt: ## format the code
	$(CARGO) fmt --all

lint: ## formatting and clippy checks, as CI runs them
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

build: ## release build of both binaries
	$(CARGO) build --release --locked

build-clockctl: ## build clockctl into bin/clockctl
	$(CARGO) build --release --locked --bin clockctl
	mkdir -p bin
	cp target/release/clockctl bin/clockctl

clean: ## remove build output
	$(CARGO) clean
	rm -rf bin
