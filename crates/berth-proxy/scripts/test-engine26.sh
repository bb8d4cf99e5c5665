#!/usr/bin/env bash
# Runs berth-proxy's Docker test suites against a nested Docker Engine 26.1 (API 1.45) with the
# Docker CLI 26 and Compose v2 from Debian trixie, inside a container on the host's daemon; the host's
# Docker CLI 20.10 is mounted in too, for BuildKit builds through the daemon's own route.
#
#   crates/berth-proxy/scripts/test-engine26.sh [TEST-BINARY-ARGS...]
#
# Extra arguments go to every test binary (e.g. a test name filter, `--nocapture`).
#
# Builds the trixie image once (debootstrap, ~1 min; tag berth-test/trixie-dind:latest), starts
# the nested engine (labelled io.berth.owner so `berth gc`-style cleanup can find it), loads the
# test images into it, runs the test binaries inside it, and removes it whatever happens.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
IMAGE=berth-test/trixie-dind:latest
NAME="berth-proxy-engine26-$$"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# The image has buildx (BuildKit through `/grpc`, the default builder of Docker CLI 23+) since
# the BuildKit suites; an older cached image without it is rebuilt.
if ! docker run --rm "$IMAGE" test -x /usr/libexec/docker/cli-plugins/docker-buildx >/dev/null 2>&1; then
  root="$(mktemp -d)"
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase \
    --include=bash,ca-certificates,docker.io,docker-cli,docker-compose,docker-buildx,iptables,curl \
    trixie "$root" "$MIRROR" >/dev/null
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$IMAGE"
fi

bins=$(cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo test -p berth-proxy --no-run 2>&1 \
  | sed -n 's/.*Executable tests\/[a-z_]*\.rs (\(.*\))/\1/p' \
  | while read -r b; do case "$b" in /*) echo "$b" ;; *) echo "$ROOT/$b" ;; esac; done)

cleanup() { docker rm -f -v "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
# The non-privileged dind flags from docs/DOCKER-ON-THESE-MACHINES; this sandbox's containers
# have no IPv6, hence DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE.
docker run -d --name "$NAME" \
  --label io.berth.owner="engine26-$$" --label io.berth.owner-host=berth-proxy-tests \
  --cap-add ALL --cap-drop SYS_RESOURCE \
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
  --device-cgroup-rule 'a *:* rwm' -v /sys/fs/cgroup:/sys/fs/cgroup:rw -v /var/lib/docker \
  -e DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1 \
  -v "$TARGET:$TARGET:ro" \
  -v /usr/bin/docker:/opt/berth/docker20:ro \
  "$IMAGE" dockerd --tls=false -H unix:///var/run/docker.sock >/dev/null
for _ in $(seq 60); do
  docker exec "$NAME" docker version >/dev/null 2>&1 && break
  sleep 1
done
docker exec "$NAME" docker version --format 'nested engine {{.Server.Version}} (API {{.Server.APIVersion}})'
for img in berth-test/busybox:latest berth-test/debian:bookworm; do
  docker save "$img" | docker exec -i "$NAME" docker load >/dev/null
done
status=0
for b in $bins; do
  echo "== $(basename "$b") on engine 26.1"
  docker exec -w /tmp -e BERTH_REQUIRE_DOCKER=1 -e BERTH_MODERN_DOCKER_CLI=/usr/bin/docker \
    -e BERTH_DOCKER20_CLI=/opt/berth/docker20 -e BERTH_BUILDX=1 "$NAME" "$b" --test-threads 2 "$@" || status=1
done
# A `docker: scoped` job run by berth itself on the nested engine: its workspace is a volume, so
# `-v "$PWD/sub:/src"` becomes a Subpath mount (API 1.45), and a symlink out of the workspace is
# refused by the daemon when it mounts it.
if [ -x "$TARGET/debug/berth" ] && [ $# -eq 0 ]; then
  echo "== berth run (docker: scoped) on engine 26.1"
  docker exec -i -w /tmp "$NAME" sh -c 'mkdir -p scoped26 && cat > scoped26/screwdriver.yaml' <<'YAML'
jobs:
  main:
    image: berth-test/debian:bookworm
    requires: [~commit]
    docker: scoped
    steps:
      - binds: |
          mkdir -p sub && echo through-subpath > sub/f
          docker run --rm -v "$PWD/sub:/src" berth-test/busybox:latest cat /src/f
          ln -s /etc sub/esc
          if docker run --rm -v "$PWD/sub/esc:/x" berth-test/busybox:latest cat /x/hostname 2>err; then
            echo ESCAPED; exit 1
          fi
          echo "escape-refused: $(tail -c 300 err)"
YAML
  if out=$(docker exec -w /tmp/scoped26 -e BERTH_OWNERS_DIR=/tmp/owners "$NAME" "$TARGET/debug/berth" run 2>&1) &&
    grep -q through-subpath <<<"$out" && grep -q escape-refused <<<"$out"; then
    grep -E "through-subpath|escape-refused" <<<"$out"
    echo "scoped job on engine 26.1: ok"
  else
    echo "$out"
    echo "scoped job on engine 26.1: FAILED" >&2
    status=1
  fi
fi
exit $status
