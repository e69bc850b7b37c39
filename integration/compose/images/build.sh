#!/usr/bin/env bash
# Builds the images of the integration environment (docker-compose.yml)
# without a registry: nothing is pulled. The Go binaries are compiled here,
# static, and copied into images FROM scratch; Consul is the pinned agent
# the tests already build into the user cache (static too); Redis is
# Debian's redis-server with the libraries it links, FROM scratch as well.
#
#   bash integration/compose/images/build.sh      # or: make images
#
# Tags (what images.env, given to docker compose with --env-file, selects):
#   portico:dev                  the edge and the example services
#   portico-offline/consul:1.20  the Consul agent
#   portico-offline/redis:7      redis-server and redis-cli
# Every image runs as uid 65532.
set -euo pipefail
cd "$(dirname "$0")/../../.."
started=$SECONDS
step() { printf '[images %3ds] %s\n' "$((SECONDS - started))" "$*"; }

command -v docker >/dev/null || { echo "images: docker not found" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "images: the Docker engine does not answer (docker info)" >&2; exit 1; }

# The classic builder: FROM scratch needs no BuildKit (and no buildx).
export DOCKER_BUILDKIT=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# image TAG DIR builds DIR (its Dockerfile) as TAG; the builder's output
# is shown only when it fails.
image() {
  local out
  if ! out="$(docker build -q -t "$1" "$2" 2>&1)"; then
    echo "$out" >&2
    echo "images: docker build $1 failed" >&2
    exit 1
  fi
}

# Users and groups of a FROM scratch image: one non-root user.
base() {
  mkdir -p "$1/etc"
  echo 'portico:x:65532:65532:portico:/nonexistent:/sbin/nologin' > "$1/etc/passwd"
  echo 'portico:x:65532:' > "$1/etc/group"
}

# --- portico:dev ---------------------------------------------------------
step "go build: portico and the example services (static; about 2 minutes on a cold build cache)"
ctx="$work/portico"
base "$ctx"
mkdir -p "$ctx/usr/local/bin" "$ctx/etc/ssl/certs" "$ctx/etc/portico"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$ctx/usr/local/bin/" \
  ./cmd/portico ./cmd/examples/users ./cmd/examples/orders ./cmd/examples/products ./cmd/examples/accounts
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/etc/ssl/certs/"
fi
cp -r cmd/examples/demo/frontends "$ctx/etc/portico/frontends"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY etc /etc
COPY usr /usr
ENV PATH=/usr/local/bin
USER 65532:65532
EXPOSE 8080 9901
CMD ["portico", "--help"]
DOCKERFILE
step "docker build portico:dev"
image portico:dev "$ctx"

# --- Consul --------------------------------------------------------------
step "Consul: the pinned agent from the user cache (built there once: make consul)"
consul="$(go run ./cmd/examples/consulagent/cmd/consulbin | tail -n 1)"
if ldd "$consul" >/dev/null 2>&1; then
  echo "images: $consul is dynamically linked; a FROM scratch image needs it static" >&2
  exit 1
fi
ctx="$work/consul"
root="$ctx/root"
base "$root"
mkdir -p "$root/bin" "$ctx/rw/tmp" "$ctx/rw/consul/data"
cp "$consul" "$root/bin/consul"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY root /
# What it writes: its own.
COPY --chown=65532:65532 rw /
ENV PATH=/bin
USER 65532:65532
EXPOSE 8500
ENTRYPOINT ["consul"]
CMD ["agent", "-dev", "-client", "0.0.0.0"]
DOCKERFILE
step "docker build portico-offline/consul:1.20"
image portico-offline/consul:1.20 "$ctx"

# --- Redis ---------------------------------------------------------------
step "Redis: Debian's redis-server and redis-cli with their libraries"
server="$(command -v redis-server || true)"
cli="$(command -v redis-cli || true)"
if [ -z "$server" ] || [ -z "$cli" ]; then
  echo "images: redis-server and redis-cli are needed (Debian: apt-get install redis-server)" >&2
  exit 1
fi
ctx="$work/redis"
root="$ctx/root"
base "$root"
mkdir -p "$root/usr/bin" "$ctx/rw/data" "$ctx/rw/tmp"
# redis-server is a link to redis-check-rdb, which picks its mode from the
# name it is started by: copy it under its own name.
cp "$(readlink -f "$server")" "$root/usr/bin/redis-server"
cp "$(readlink -f "$cli")" "$root/usr/bin/redis-cli"
for lib in $( (ldd "$server"; ldd "$cli") | awk '/=> \//{print $3} /^\t\/lib/{print $1}' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY root /
# What it writes: its own.
COPY --chown=65532:65532 rw /
ENV PATH=/usr/bin
USER 65532:65532
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
DOCKERFILE
step "docker build portico-offline/redis:7"
image portico-offline/redis:7 "$ctx"

step "done: portico:dev, portico-offline/consul:1.20, portico-offline/redis:7"
