# syntax=docker/dockerfile:1
# hookbridge container image.
#
#   docker build -t hookbridge:dev .
#   docker run --rm -v "$PWD/my-config.yaml:/etc/hookbridge/config.yaml:ro" -p 9464:9464 hookbridge:dev
#
# Releases are built by the recipe in RELEASING.md (buildx with SBOM and provenance, base
# images pinned by digest, cosign signature).
#
# Base images. RELEASE BUILDS MUST PIN THEM BY DIGEST: RELEASING.md passes
# --build-arg RUST_IMAGE=…@sha256:… and RUNTIME_IMAGE=…@sha256:…, resolved at release time
# (they could not be resolved where this file was written: no registry access). The tags
# below are for local builds only.
ARG RUST_IMAGE=docker.io/library/rust:1.89-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# Build stage: the release binary. librdkafka is built from source by rdkafka-sys
# (cmake, OpenSSL headers for its TLS support, pkg-config to find them); zlib is linked
# statically, so the runtime needs no more than glibc, libgcc and OpenSSL.
# hadolint ignore=DL3006
FROM ${RUST_IMAGE} AS builder

# Versions are those of Debian stable, which only takes security fixes: pinning them
# would break the build at each fix.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The source revision, shown by hookbridge_build_info{revision}.
ARG REVISION=unknown
ENV HOOKBRIDGE_REVISION=${REVISION}

# The cache mounts keep downloaded crates and compiled dependencies between builds
# (BuildKit); the binary is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin hookbridge --features rdkafka/libz-static \
    && install -m 0755 target/release/hookbridge /usr/local/bin/hookbridge \
    && mkdir -p /out/etc/hookbridge

# Runtime stage: distroless "cc" (glibc, libgcc, OpenSSL, CA certificates, tzdata), no
# shell, no package manager.
# hadolint ignore=DL3006
FROM ${RUNTIME_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="hookbridge" \
      org.opencontainers.image.description="Object-change events from Kafka or NATS JetStream to webhooks and chat notifications" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}"

COPY --from=builder /usr/local/bin/hookbridge /usr/local/bin/hookbridge
COPY --from=builder --chown=10001:10001 /out/etc/hookbridge /etc/hookbridge

# Numeric, so that Kubernetes can check runAsNonRoot without reading /etc/passwd; the
# chart runs as 10001 too.
USER 10001:10001

# /metrics, /healthz, /readyz (server.listen).
EXPOSE 9464

ENTRYPOINT ["/usr/local/bin/hookbridge"]
CMD ["run", "--config", "/etc/hookbridge/config.yaml"]
