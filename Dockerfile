# One image for every service: `checkout orchestrator`, `checkout worker <kind>`, and the
# command-line client.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p checkout-cli

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/checkout /usr/local/bin/checkout
USER 65532:65532
ENTRYPOINT ["checkout"]
