#!/usr/bin/env bash
# Regenerates the Go code beside every .proto under protos/. Needs protoc
# (Debian: protobuf-compiler); the Go plugins are pinned as tool directives in
# go.mod. Generated code is checked in, so building Portico needs none of this.
set -euo pipefail
cd "$(dirname "$0")/.."
googleapis="$(go list -m -f '{{.Dir}}' github.com/grpc-ecosystem/grpc-gateway@v1.16.0 2>/dev/null || true)"
if [ -z "$googleapis" ]; then
  go mod download github.com/grpc-ecosystem/grpc-gateway@v1.16.0
  googleapis="$(go env GOMODCACHE)/github.com/grpc-ecosystem/grpc-gateway@v1.16.0"
fi
googleapis="$googleapis/third_party/googleapis"
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
# buf/validate ships as generated Go only: print its .proto from the linked
# descriptor so protoc can import it (its Go code comes from its own module).
go run ./protos/internal/protosrc "$bin/include" buf/validate/validate.proto
go build -o "$bin/" google.golang.org/protobuf/cmd/protoc-gen-go \
  google.golang.org/grpc/cmd/protoc-gen-go-grpc \
  github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway
mod=github.com/portico-dev/portico
for f in $(find protos -name '*.proto' -not -path '*/internal/*' | sort); do
  args=(--go_out=. --go_opt=module=$mod --go-grpc_out=. --go-grpc_opt=module=$mod)
  case "$f" in
    protos/examples/*) args+=(--grpc-gateway_out=. --grpc-gateway_opt=module=$mod) ;;
  esac
  PATH="$bin:$PATH" protoc -I protos -I "$googleapis" -I /usr/include -I "$bin/include" "${args[@]}" "$f"
done
