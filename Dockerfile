# hookbridge container image.
#
#   docker build -t hookbridge:0.1.0 .
#   docker run --rm -v "$PWD/my-config.yaml:/etc/hookbridge/config.yaml:ro" -p 9464:9464 hookbridge:0.1.0
#
# Build stage: the release binary. librdkafka is built from source by rdkafka-sys
# (cmake, OpenSSL headers for its TLS support, pkg-config to find them).
FROM rust:1-bookworm AS builder

# Versions are those of Debian stable, which only takes security fixes: pinning them
# would break the build at each fix.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The cache mounts keep downloaded crates and compiled dependencies between builds
# (BuildKit); the binary is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin hookbridge \
    && install -m 0755 target/release/hookbridge /usr/local/bin/hookbridge

# Runtime stage: the binary, CA certificates for TLS to webhook receivers and brokers,
# and the OpenSSL runtime librdkafka links against.
FROM debian:bookworm-slim

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 hookbridge \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin hookbridge \
    && mkdir -p /etc/hookbridge

COPY --from=builder /usr/local/bin/hookbridge /usr/local/bin/hookbridge

LABEL org.opencontainers.image.title="hookbridge" \
      org.opencontainers.image.description="Object-change events from Kafka or NATS JetStream to webhooks and chat notifications" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

# Numeric, so that Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001

# /metrics, /healthz, /readyz (server.listen).
EXPOSE 9464

ENTRYPOINT ["/usr/local/bin/hookbridge"]
CMD ["run", "--config", "/etc/hookbridge/config.yaml"]
