# The one image of the integration environment (docker-compose.yml): the
# portico binary and the example services, static, on an empty base, run as
# a non-root user. Each compose service runs one of them as its command;
# `portico probe` is the health check (there is no shell or curl here).
# Needs BuildKit (Docker's default builder since 23.0) for the cache mounts.
#
#   docker build -t portico:dev .
#   docker run --rm portico:dev                                   # portico's usage
#   docker run --rm portico:dev portico routes --consul HOST:8500 # one binary per command

FROM golang:1.26 AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOMODCACHE=/cache/mod GOCACHE=/cache/build
COPY . .
# The module and build caches outlive the build: a rebuild after a source
# change downloads nothing and recompiles only what changed.
RUN --mount=type=cache,target=/cache/mod \
    --mount=type=cache,target=/cache/build \
    go build -trimpath -ldflags="-s -w" -o /out/ \
      ./cmd/portico \
      ./cmd/examples/users \
      ./cmd/examples/orders \
      ./cmd/examples/products \
      ./cmd/examples/accounts
# The runtime stage has no useradd: write its user and group by hand.
RUN echo 'portico:x:65532:65532:portico:/nonexistent:/sbin/nologin' > /out/passwd \
 && echo 'portico:x:65532:' > /out/group

FROM scratch
COPY --from=build /out/passwd /etc/passwd
COPY --from=build /out/group /etc/group
# Root CAs for https JWKS URLs and a TLS Consul.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/portico /out/users /out/orders /out/products /out/accounts /usr/local/bin/
# The home screen's frontend proto (edge.compose.protos_dir in the compose
# environment).
COPY --from=build /src/cmd/examples/demo/frontends /etc/portico/frontends
ENV PATH=/usr/local/bin
USER 65532:65532
EXPOSE 8080 9901
CMD ["portico", "--help"]
