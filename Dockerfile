# syntax=docker/dockerfile:1
#
# The edgemeter image: one static binary (the WASM mappers embedded) on an empty base, as
# user 65532, with its two writable directories as volumes so the root file system can be
# read-only.   docker build -t edgemeter .
#
# scripts/build-image builds the same image without a Docker engine by reading this file:
# it runs the builder stage's ENV and RUN lines on the machine from the repository root
# (WORKDIR /src here), inserts each `COPY --from=builder` of the final stage as a layer,
# and sets the final stage's ENV, VOLUME, USER, EXPOSE, LABEL, ENTRYPOINT and CMD. It
# refuses instructions and forms it does not know (variables, heredocs, shell-form
# ENTRYPOINT/CMD), so keep to these; scripts/check-image checks the result.

# The version of rust-toolchain.toml (scripts/build-image refuses a difference).
FROM rust:1.95.0-bookworm AS builder
WORKDIR /src
# The built-in mappers are compiled to wasm32-wasip2 by host/build.rs and embedded.
RUN rustup target add wasm32-wasip2
COPY . .
ENV CARGO_TARGET_DIR=target/image
# Static for the host target only: with --target, these flags reach neither build scripts
# nor the nested wasm32-wasip2 cargo build of host/build.rs (plain RUSTFLAGS would).
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
RUN cargo build --release --locked --target x86_64-unknown-linux-gnu -p edgemeter
# The whole root file system, owners and modes included (COPY --from keeps them): the
# binary without its line tables (217 → 50 MB; symbols stay for backtraces, the unstripped
# one stays in the builder), CA certificates, passwd/group naming 65532, the volume dirs.
RUN umask 022 \
 && r=target/image/rootfs \
 && rm -rf "$r" \
 && install -d "$r/etc/ssl/certs" "$r/var/lib/edgemeter" "$r/var/cache/edgemeter" \
 && install -d -m 0750 -o 65532 -g 65532 "$r/var/lib/edgemeter/queue" "$r/var/cache/edgemeter/mappers" \
 && objcopy --strip-debug target/image/x86_64-unknown-linux-gnu/release/edgemeter "$r/edgemeter" \
 && chmod 0755 "$r/edgemeter" \
 && install -m 0644 /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/ca-certificates.crt" \
 && printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
      'edgemeter:x:65532:65532:edgemeter:/nonexistent:/sbin/nologin' > "$r/etc/passwd" \
 && printf '%s\n' 'root:x:0:' 'edgemeter:x:65532:' > "$r/etc/group" \
 && chmod 0644 "$r/etc/passwd" "$r/etc/group"

FROM scratch
COPY --from=builder /src/target/image/rootfs/ /
ENV EDGEMETER_QUEUE_DIR=/var/lib/edgemeter/queue \
    EDGEMETER_CACHE_DIR=/var/cache/edgemeter/mappers
VOLUME ["/var/lib/edgemeter/queue", "/var/cache/edgemeter/mappers"]
USER 65532:65532
# /metrics, /healthz, /readyz (EDGEMETER_HTTP_LISTEN).
EXPOSE 9464
LABEL org.opencontainers.image.title="edgemeter" \
      org.opencontainers.image.description="Meters Kubernetes and Run:ai workloads to the second and ships CloudEvents to OpenMeter." \
      org.opencontainers.image.source="https://github.com/edgemeter/edgemeter" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
ENTRYPOINT ["/edgemeter"]
CMD ["run"]
