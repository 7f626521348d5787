# syntax=docker/dockerfile:1
#
# ip-masq's image: the agent and iptables (nf_tables and legacy backends).
#   docker build -t ip-masq:latest .
#
# Build stage: stable Rust for the agent, nightly with rust-src and
# bpf-linker for the eBPF classifier that build.rs embeds, exactly as
# `cargo xtask setup` prepares a workstation.
FROM rust:1-bookworm AS build
RUN rustup toolchain install nightly --profile minimal --component rust-src
# bpf-linker is built against nightly's own LLVM, so the two always match.
RUN set -eux; \
    sysroot="$(rustup run nightly rustc --print sysroot)"; \
    major="$(rustup run nightly rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"; \
    library="$(ls "$sysroot"/lib/libLLVM.so."$major"* "$sysroot"/lib/libLLVM-"$major"* 2>/dev/null | head -n 1)"; \
    mkdir -p /opt/llvm/lib; \
    ln -s "$library" /opt/llvm/lib/libLLVM.so; \
    LLVM_PREFIX=/opt/llvm cargo install bpf-linker --locked --version '~0.13' \
        --no-default-features --features "llvm-$major"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ip-masq \
    && install -D -m 0755 target/release/ip-masq /out/ip-masq

# Runtime: Debian's iptables ships both backends; the entry point picks the
# one the node uses. Nothing else: the agent talks to the kernel directly.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/image/iptables-wrapper /usr/local/bin/iptables-wrapper
COPY --from=build /out/ip-masq /usr/local/bin/ip-masq
ENTRYPOINT ["/usr/local/bin/iptables-wrapper", "/usr/local/bin/ip-masq"]
CMD ["run"]
