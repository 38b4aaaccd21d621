# syntax=docker/dockerfile:1
# The config-access-collector image: built on Debian 12 (bookworm) with the
# toolchain scripts/dev.sh installs, run on debian:bookworm-slim (same glibc).
#   docker build -t config-access-collector:0.1.0 .
# One build per platform (x86_64 and arm64: the builder compiles the BPF
# programs for the architecture it runs on), e.g.
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... --push .
# charts/config-access-collector runs it as a DaemonSet. Package versions are
# pinned to Debian 12; when a point release replaces one, bump it here.
#
# Build arguments (the defaults are the published build):
#   BUILDER_IMAGE, RUNTIME_IMAGE  the two bases; a machine without a registry
#       passes local ones (tests/container.rs: an mmdebstrap'd bookworm).
#   BINARY=build     compile in the builder stage (default);
#   BINARY=prebuilt  take target/release/config-access-collector from the
#       context instead (built by `cargo build --release --locked` on Debian 12,
#       as scripts/dev.sh does); the builder stage is then not built at all.
ARG BUILDER_IMAGE=docker.io/library/rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim
ARG BINARY=build

# The OCI labels belong to the image, the runtime stage; not to the stages
# that only make the binary.
# hadolint ignore=DL3049
FROM ${BUILDER_IMAGE} AS builder
# clang-19 compiles the BPF programs (build.rs); libbpf links libelf and zlib.
# The APT_PACKAGES of scripts/dev.sh minus clang-format (lint only).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        clang-19=1:19.1.7-3~deb12u1 \
        llvm-19=1:19.1.7-3~deb12u1 \
        libelf-dev=0.188-2.1 \
        zlib1g-dev=1:1.2.13.dfsg-1+deb12u1 \
        pkg-config=1.8.1-1 \
        make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY bpf ./bpf
COPY src ./src
COPY benches ./benches
# The release binary from the lockfile, without debug info (symbols stay, for
# backtraces). The target directory is a build cache, so the binary is copied out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo cargo build --release --locked \
    && install -D -m 0755 target/release/config-access-collector /out/config-access-collector

# The binary, from one of the two stages BINARY names.
# hadolint ignore=DL3049
FROM builder AS binary-build
# hadolint ignore=DL3049
FROM scratch AS binary-prebuilt
COPY target/release/config-access-collector /out/config-access-collector
# hadolint ignore=DL3006
FROM binary-${BINARY} AS binary

# hadolint ignore=DL3006
FROM ${RUNTIME_IMAGE} AS runtime
ARG RUNTIME_IMAGE
# The binary's shared libraries (readelf -d, DT_NEEDED): libelf.so.1 is
# libelf1, installed here; libc.so.6, libm.so.6, ld-linux-x86-64.so.2 (on arm64: ld-linux-aarch64.so.1),
# libgcc_s.so.1 and libz.so.1 come with every Debian image (libc6, libgcc-s1
# and zlib1g belong to its essential set). tests/chart.rs checks this against
# the binary. ca-certificates: the trust store for OTLP over https; it is not
# pinned, because an old CA bundle is the wrong thing to reproduce.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libelf1=0.188-2.1 \
        ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=binary /out/config-access-collector /usr/local/bin/config-access-collector
# Defaults for a standalone run; the chart mounts its ConfigMap over this directory.
COPY config/config.yaml /etc/config-access-collector/config.yaml
LABEL org.opencontainers.image.title="config-access-collector" \
      org.opencontainers.image.description="eBPF node agent: which pod, container and process read which Kubernetes Secret or ConfigMap" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"
# No USER: the collector runs as uid 0, with only the capabilities the chart
# grants (BPF, PERFMON, SYS_PTRACE, DAC_READ_SEARCH; every other one dropped).
# A non-root user would get none of them at exec (Kubernetes sets no ambient
# capabilities), and tracefs, the kubelet's directories and other processes'
# /proc entries belong to root. See docs/install.md.
ENTRYPOINT ["/usr/local/bin/config-access-collector"]
CMD ["run", "--config", "/etc/config-access-collector/config.yaml"]
