# syntax=docker/dockerfile:1
# clock-server container image: a Rust builder stage and a small Alpine runtime stage.
# Needs BuildKit (the default builder since Docker 23) for the cache mounts and COPY --chmod.
#
#   docker build -t clock-server:0.0.1 .                 # or: make docker-build
#   docker buildx build --platform linux/arm64 ...        # other architectures, built natively
#                                                         # for that platform (emulated under buildx)

# Both base images are build arguments so a mirror or a newer tag can be used without
# editing this file. The Rust tag follows the project's toolchain (rustc 1.95).
ARG RUST_IMAGE=rust:1.95-alpine
ARG ALPINE_VERSION=3.21
ARG RUNTIME_IMAGE=alpine:${ALPINE_VERSION}

# ---------------------------------------------------------------------------------------
# Builder: compiles clock-server and clockctl as fully static, stripped musl binaries.
# ---------------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder

# busybox ash with pipefail, so a failing command in a pipe fails the step.
SHELL ["/bin/ash", "-eo", "pipefail", "-c"]

# Set by BuildKit from --platform; the defaults apply to builders that do not set them.
ARG TARGETOS=linux
ARG TARGETARCH=amd64

# musl-dev provides the C runtime objects and headers that ring's C/assembly code, the
# mimalloc allocator (C, compiled by its -sys crate) and the static link need. Versions
# are not pinned: they come with the pinned builder image tag.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev

# Map BuildKit's OS/architecture to a Rust target triple once, so later steps read it
# from a file. The builder runs natively on the target platform (under emulation when
# buildx builds a foreign one), so the triple is normally the image's own host triple and
# `rustup target add` is a no-op; it only downloads when the two differ.
RUN set -eu; \
    case "${TARGETOS}/${TARGETARCH}" in \
        linux/amd64) triple=x86_64-unknown-linux-musl ;; \
        linux/arm64) triple=aarch64-unknown-linux-musl ;; \
        *) echo "unsupported platform ${TARGETOS}/${TARGETARCH} (linux/amd64 and linux/arm64 are)" >&2; exit 1 ;; \
    esac; \
    if ! rustup target list --installed | grep -qx "${triple}"; then rustup target add "${triple}"; fi; \
    echo "${triple}" > /rust-target

WORKDIR /app
# The context is filtered by .dockerignore (no target/, .git, bin/ ...). Copying the whole
# tree keeps the build working when Cargo.toml starts to reference another file; the
# target-directory cache below keeps rebuilds incremental anyway.
COPY . .

# - Cache mounts keep the crate registry and the target directory between builds; the
#   target cache is per architecture because build scripts run on the build platform.
# - +crt-static: a fully static binary (musl's default, stated so it cannot regress).
# - --remap-path-prefix: no local paths (/app, $CARGO_HOME) end up in the binaries.
# - -C strip=symbols: stripped (the release profile also sets strip = true).
# - --locked: build exactly Cargo.lock.
# - --no-default-features --features stores: leaves out the `demo` feature (an embedded
#   MQTT broker for `clock-server demo`, about half the server binary; the image runs next
#   to a real broker) and keeps every state store (file: and redis://).
# The binaries are copied out because a cache mount is not part of the image layer.
RUN --mount=type=cache,id=clock-server-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=clock-server-target-${TARGETARCH},target=/app/target,sharing=locked \
    set -eu; \
    triple="$(cat /rust-target)"; \
    cargo_home="${CARGO_HOME:-/usr/local/cargo}"; \
    export RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols --remap-path-prefix=/app=/build --remap-path-prefix=${cargo_home}=/cargo"; \
    cargo build --release --locked --no-default-features --features stores --target "${triple}" --bin clock-server --bin clockctl; \
    mkdir -p /out; \
    cp "target/${triple}/release/clock-server" "target/${triple}/release/clockctl" /out/

# ---------------------------------------------------------------------------------------
# Runtime: Alpine with CA certificates (TLS to brokers and REST services) and time zones.
# ---------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

ARG APP_UID=2000
ARG APP_GID=2000

LABEL org.opencontainers.image.title="clock-server" \
      org.opencontainers.image.description="Secure HTTP gateway that delivers commands to smart clocks over MQTT and REST" \
      org.opencontainers.image.licenses="MIT"

# Not pinned: Alpine keeps only the current package version in a release branch, so a
# pin breaks the build at the next security update; the branch is pinned by the image tag.
# hadolint ignore=DL3018
RUN apk add --no-cache ca-certificates tzdata \
    && addgroup -S -g "${APP_GID}" app \
    && adduser -S -D -H -h /nonexistent -s /sbin/nologin -u "${APP_UID}" -G app app

# Read-only and executable for everyone, owned by root: the app user cannot replace them.
COPY --from=builder --chmod=0555 /out/clock-server /usr/local/bin/server
COPY --from=builder --chmod=0555 /out/clockctl /usr/local/bin/clockctl

ENV HTTP_ADDR=:8080
EXPOSE 8080

# The `app` user, given by number so that Kubernetes' runAsNonRoot can verify it.
USER ${APP_UID}:${APP_GID}

ENTRYPOINT ["/usr/local/bin/server"]
