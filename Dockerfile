# syntax=docker/dockerfile:1
# Stacksmith: one image with both binaries, `controlplane` (default) and `provisioner`.
#   docker build -t stacksmith .
#   docker run --read-only -e DATABASE_URL=... -e REDIS_URL=... -p 8080:8080 stacksmith
#   docker run --read-only --entrypoint /usr/local/bin/provisioner stacksmith --help
# The image needs no writable path: run it with a read-only root filesystem.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Sources only; .dockerignore keeps target/ and .git out of the context.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p controlplane -p provisioner \
    && install -D -m 0755 target/release/controlplane /out/controlplane \
    && install -D -m 0755 target/release/provisioner /out/provisioner

# distroless/cc: glibc, CA certificates, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/controlplane /out/provisioner /usr/local/bin/
USER 65532:65532
ENV CONTROLPLANE_LISTEN=0.0.0.0:8080
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/controlplane", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/controlplane"]
CMD ["serve"]
