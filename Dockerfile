# Build:  docker build -t ghcr.io/homelab-operator/homelab-operator:0.1.0 .
# Push:   docker push ghcr.io/homelab-operator/homelab-operator:0.1.0
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
RUN cargo build --release --locked --bin homelab-operator \
 && cp target/release/homelab-operator /homelab-operator

# Minimal runtime: glibc and CA certificates only, no shell, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /homelab-operator /usr/local/bin/homelab-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/homelab-operator"]
CMD ["run", "--config", "/etc/homelab-operator/config.yaml"]
