# capssh manager image.
#
# The binary links glibc dynamically (rustls with ring; no OpenSSL), so it is built on Debian 12
# and runs on distroless cc-debian12, which ships the matching glibc and libgcc and nothing else.
#
#   docker build -t ghcr.io/capssh/capssh:v0.2.0 .
#
# `make images` builds the same image without docker (e2e/src/images.rs); a test there fails when
# this file's final stage and that image differ in user, entrypoint, command or binary path.
#
# The whole workspace is copied because cargo loads every workspace member's manifest; keep
# target/, _artifacts/, hack/tools/bin/ and .git/ out of the build context (.dockerignore).

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --package capssh --bin capssh

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/capssh /capssh
USER 65532:65532
ENTRYPOINT ["/capssh"]
CMD ["manager"]
