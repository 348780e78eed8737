# The courier image: one binary, `courier`, for every role (`run` is the
# worker, `admin serve` the admin API); deploy/kubernetes runs it.
#
#   docker build -t courier:0.1.0 --build-arg COURIER_GIT_COMMIT=$(git rev-parse --short=12 HEAD) .
#
# tests/deploy.rs holds this file to what it can check without a Docker
# engine: the build is the release build scripts/demo runs, the binary is
# copied from where that build puts it, USER is the manifests' runAsUser,
# and the manifests' args are commands the binary has.

# ---- build ------------------------------------------------------------------
# The workspace's toolchain (rust-version 1.94 or newer), on the same Debian
# release as the runtime image, so the binary finds the glibc it was linked
# against.
FROM docker.io/library/rust:1.95-slim-bookworm AS builder
# The slim image has a C compiler but not make, which jemalloc's build runs.
RUN apt-get update && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# `courier_build_info{commit=…}`: .git is not in the build context
# (.dockerignore), so the commit comes in as a build argument.
ARG COURIER_GIT_COMMIT=unknown
ENV COURIER_GIT_COMMIT=${COURIER_GIT_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --bin courier

# ---- run --------------------------------------------------------------------
# glibc, libgcc and CA certificates, no shell, no package manager. TLS is
# rustls with bundled roots; nothing else is linked dynamically.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/courier /usr/local/bin/courier
# distroless' "nonroot" user; the manifests' runAsUser and runAsGroup.
USER 65532:65532
# telemetry.listen (/metrics /healthz /readyz) and admin.listen.
EXPOSE 9464 8081
ENTRYPOINT ["/usr/local/bin/courier"]
CMD ["run"]
