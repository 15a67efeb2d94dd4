# clock-server — developer and container tasks. `make help` lists them.

CARGO ?= cargo

# Container image and registry (Dockerfile; docs/containers.md). Every variable can be
# overridden on the command line, e.g. `make docker-push REGISTRY=reg.example:5000 IMAGE_TAG=1.2.3`.
DOCKER ?= docker
RUST_IMAGE ?= rust:1.95-alpine
RUNTIME_IMAGE ?= alpine:3.21
IMAGE_NAME ?= clock-server
IMAGE_TAG ?= 0.0.1
REGISTRY ?= 192.168.2.201:32000
HOST_PORT ?= 8080
CONTAINER_PORT ?= 8080
# Extra `docker run` options for docker-run, e.g. DOCKER_RUN_ARGS="--env-file clock-server.env".
DOCKER_RUN_ARGS ?=
# Platforms for docker-buildx-push.
PLATFORMS ?= linux/amd64,linux/arm64
HADOLINT ?= hadolint
# Kubernetes (deploy/kubernetes, docs/kubernetes.md): the registry the dev overlay pulls
# from (MicroK8s's built-in one), the kubectl to apply with (e.g. KUBECTL="microk8s kubectl")
# and the overlay for kubernetes-apply (single, ha or dev; no default, on purpose).
KUBERNETES_REGISTRY ?= localhost:32000
KUBECTL ?= kubectl
OVERLAY ?=
# The Compose v2 plugin when it is installed, else the standalone docker-compose
# (a recursive variable: only looked up when a Compose target runs).
COMPOSE ?= $(shell $(DOCKER) compose version >/dev/null 2>&1 && echo '$(DOCKER) compose' || echo docker-compose)

.PHONY: help run test test-deps fmt lint build build-clockctl clean bench
.PHONY: docker-build docker-run docker-stop docker-clean docker-login docker-push docker-buildx-push
.PHONY: compose-test lint-containers
.PHONY: kubernetes-push kubernetes-check kubernetes-apply

# The Dockerfile needs BuildKit (cache mounts, COPY --chmod): the default since Docker 23,
# switched on here for older engines and for the standalone docker-compose v1.
docker-build compose-test: export DOCKER_BUILDKIT = 1
# docker-push (and its docker-build) run with this registry when reached from here.
kubernetes-push: REGISTRY = $(KUBERNETES_REGISTRY)
compose-test: export COMPOSE_DOCKER_CLI_BUILD = 1

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

run: ## run the server (configure with environment variables, see docs/configuration.md)
	$(CARGO) run --release --bin clock-server

test: test-deps ## install test dependencies if missing, then run all tests
	$(CARGO) test --locked

test-deps: ## install Mosquitto, redis-server and openssl when missing (Debian/Ubuntu)
	./scripts/install-test-deps.sh

fmt: ## format the code
	$(CARGO) fmt --all

lint: ## formatting and clippy checks, as CI runs them
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

bench: ## benchmark the release server against its own Mosquitto, then under attack, stores, alarms, presence, event streams (BENCH_RUNS, BENCH_SECONDS; docs/performance.md)
	./scripts/bench.sh
	./scripts/bench-attacks.sh
	./scripts/bench-store.sh
	./scripts/bench-alarms.sh
	./scripts/bench-presence.sh
	./scripts/bench-events.sh

build: ## release build of both binaries
	$(CARGO) build --release --locked

build-clockctl: ## build clockctl into bin/clockctl
	$(CARGO) build --release --locked --bin clockctl
	mkdir -p bin
	cp target/release/clockctl bin/clockctl

clean: ## remove build output
	$(CARGO) clean
	rm -rf bin

docker-build: ## build the container image IMAGE_NAME:IMAGE_TAG (needs BuildKit)
	$(DOCKER) build --build-arg RUST_IMAGE=$(RUST_IMAGE) --build-arg RUNTIME_IMAGE=$(RUNTIME_IMAGE) -t $(IMAGE_NAME):$(IMAGE_TAG) .

docker-run: docker-build ## build, then run the image detached on HOST_PORT (options: DOCKER_RUN_ARGS)
	$(DOCKER) run --rm -d --name $(IMAGE_NAME) -p $(HOST_PORT):$(CONTAINER_PORT) $(if $(strip $(DOCKER_RUN_ARGS)),$(strip $(DOCKER_RUN_ARGS)) )$(IMAGE_NAME):$(IMAGE_TAG)

docker-stop: ## stop the container started by docker-run
	$(DOCKER) stop $(IMAGE_NAME)

docker-clean: ## stop the container (if running) and remove the image
	-$(DOCKER) stop $(IMAGE_NAME)
	$(DOCKER) rmi $(IMAGE_NAME):$(IMAGE_TAG)

docker-login: ## log in to REGISTRY
	$(DOCKER) login $(REGISTRY)

docker-push: docker-build ## build, tag as REGISTRY/IMAGE_NAME:IMAGE_TAG and :latest, push both
	$(DOCKER) tag $(IMAGE_NAME):$(IMAGE_TAG) $(REGISTRY)/$(IMAGE_NAME):$(IMAGE_TAG)
	$(DOCKER) tag $(IMAGE_NAME):$(IMAGE_TAG) $(REGISTRY)/$(IMAGE_NAME):latest
	$(DOCKER) push $(REGISTRY)/$(IMAGE_NAME):$(IMAGE_TAG)
	$(DOCKER) push $(REGISTRY)/$(IMAGE_NAME):latest

docker-buildx-push: ## multi-arch build for PLATFORMS with buildx, push IMAGE_TAG and latest
	$(DOCKER) buildx build --platform $(PLATFORMS) --build-arg RUST_IMAGE=$(RUST_IMAGE) --build-arg RUNTIME_IMAGE=$(RUNTIME_IMAGE) -t $(REGISTRY)/$(IMAGE_NAME):$(IMAGE_TAG) -t $(REGISTRY)/$(IMAGE_NAME):latest --push .

compose-test: ## run the Compose stack; passes only if the subscriber got clockctl's message
	$(COMPOSE) build
	$(COMPOSE) up -d mosquitto subscriber server
	$(COMPOSE) run --rm clockctl; sent=$$?; \
	received=$$(docker wait "$$($(COMPOSE) ps -q subscriber)"); \
	$(COMPOSE) logs subscriber; \
	$(COMPOSE) down --remove-orphans; \
	if [ "$$sent" -ne 0 ] || [ "$$received" != 0 ]; then \
		echo "compose-test: FAILED: clockctl exit $$sent, subscriber exit $$received" >&2; \
		exit 1; \
	fi; \
	echo "compose-test: OK: the message reached an MQTT subscriber"

lint-containers: ## hadolint the Dockerfile and validate docker-compose.yml
	$(HADOLINT) --failure-threshold warning Dockerfile
	$(COMPOSE) config -q

kubernetes-push: docker-push ## build, then push IMAGE_TAG and latest to KUBERNETES_REGISTRY (default localhost:32000, MicroK8s's)

kubernetes-check: ## render every overlay in deploy/kubernetes and validate it offline (installs the pinned tools)
	./scripts/check-kubernetes.sh

kubernetes-apply: ## kubectl apply -k deploy/kubernetes/overlays/OVERLAY (OVERLAY=single|ha|dev required; KUBECTL)
	@if [ -z "$(OVERLAY)" ] || [ ! -d "deploy/kubernetes/overlays/$(OVERLAY)" ]; then \
		echo "kubernetes-apply: set OVERLAY to one of: $$(ls deploy/kubernetes/overlays | tr '\n' ' ')" >&2; \
		exit 2; \
	fi
	$(KUBECTL) apply -k deploy/kubernetes/overlays/$(OVERLAY)
