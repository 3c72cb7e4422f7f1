# One image for every service: `checkout orchestrator`, `checkout worker <kind>`, and the
# command-line client. Only the product binary: the tools (`checkout-tools`: demo, chaos, bench)
# and the test harness they use are neither built nor shipped.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p checkout-cli
# Fails the build if the test harness ever becomes a dependency of the product.
RUN cargo tree --locked --offline -p checkout-cli -e normal --prefix none > /tmp/product-deps \
    && ! grep checkout-harness /tmp/product-deps

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/checkout /usr/local/bin/checkout
USER 65532:65532
ENTRYPOINT ["checkout"]
