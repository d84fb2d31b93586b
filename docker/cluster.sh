#!/usr/bin/env bash
# tagger as a cluster of containers on one podman host, each standing in for a machine:
# Redis, PostgreSQL, N workers and a scan started from its own container, on one network.
#
#   docker/cluster.sh build                 build the images (base: $BASE)
#   docker/cluster.sh up LIBRARY [N]        start Redis, PostgreSQL (database made on the
#                                           first start) and N workers (default 2)
#   docker/cluster.sh scan [ARGS...]        scan the library from a scan container and follow it
#   docker/cluster.sh scale N               run N worker containers (start or remove some)
#   docker/cluster.sh status                containers, then `tagger status` of the deployment
#   docker/cluster.sh logs NAME             a container's log (worker-1, redis, postgres, ...)
#   docker/cluster.sh down [--volumes]      remove the containers (and the data volumes)
#
# The workers see the library at /music, the scan container at /library: TAGGER_PATH_MAP on the
# workers maps one to the other, as for workers on machines that mount the library elsewhere.
# Settings (environment): BASE (python:3.11-slim; localhost/debian:bookworm made by
# docker/base-image.sh where no registry is reachable), CLUSTER (name prefix, "tagger"),
# CA_BUNDLE (certificates pip trusts in the build; default the system's), WORKER_CPUS (CPUs per worker container, 1), TAGGER_USER (uid:gid the tagger containers run
# as; default the image's user, 1000), PODMAN (the podman command).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "cluster.sh: $*" >&2; exit 1; }

BASE=${BASE:-python:3.11-slim}
C=${CLUSTER:-tagger}
WORKER_CPUS=${WORKER_CPUS:-1}
# runc and cgroupfs: crun refuses this kernel's hybrid cgroups; the sandbox refuses rlimits
# above the host's (../shared/CONTAINERS.md)
P=(${PODMAN:-podman --runtime runc --cgroup-manager=cgroupfs})
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
NET=$C-net
IMAGE=localhost/tagger:latest
PG_PASSWORD=${POSTGRES_PASSWORD:-tagger}
ENVS=(-e TAGGER_BROKER_URL=redis://$C-redis:6379/0
      -e TAGGER_DB_URL=postgresql+psycopg://tagger:$PG_PASSWORD@$C-postgres:5432/tagger)
USER_FLAG=()
[ -n "${TAGGER_USER:-}" ] && USER_FLAG=(--user "$TAGGER_USER")

library() {  # the library folder recorded by `up`
  "${P[@]}" volume inspect "$C-state" --format '{{.Mountpoint}}' >/dev/null 2>&1 || die "not up (run: up LIBRARY)"
  cat "$("${P[@]}" volume inspect "$C-state" --format '{{.Mountpoint}}')/library"
}

build() {
  local secret=()
  # the CA bundle pip trusts here (a TLS-inspecting proxy), as a build secret: never in a layer
  local ca=${CA_BUNDLE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
  [ -s "$ca" ] && secret=(--secret "id=ca_bundle,src=$ca")
  "${P[@]}" build "${LIMITS[@]}" "${secret[@]}" --build-arg BASE="$BASE" -f docker/Dockerfile -t "$IMAGE" .
  "${P[@]}" build "${LIMITS[@]}" --build-arg BASE="$BASE" -f docker/redis.Dockerfile -t localhost/tagger-redis:latest docker
  "${P[@]}" build "${LIMITS[@]}" --build-arg BASE="$BASE" -f docker/postgres.Dockerfile -t localhost/tagger-postgres:latest docker
}

wait_for() {  # NAME COMMAND...: until COMMAND succeeds inside container NAME (60 s)
  local name=$1; shift
  for _ in $(seq 120); do
    "${P[@]}" exec "$name" "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "$name did not become ready"
}

worker_names() {
  "${P[@]}" ps -a --filter "label=tagger.cluster=$C" --filter "label=tagger.role=worker" --format '{{.Names}}' | sort -V
}

start_worker() {  # N: start worker container N
  local lib; lib=$(library)
  # --init: a process of its own as PID 1, so a worker still loading its model stops on SIGTERM
  # (PID 1 without a handler ignores it; podman waited out its timeout and killed them)
  "${P[@]}" run -d --init "${LIMITS[@]}" "${USER_FLAG[@]}" --name "$C-worker-$1" --hostname "$C-worker-$1" \
    --network "$NET" --label "tagger.cluster=$C" --label tagger.role=worker --cpus "$WORKER_CPUS" \
    "${ENVS[@]}" -e TAGGER_PATH_MAP=/library=/music -v "$lib:/music:rw" \
    "$IMAGE" worker >/dev/null
  echo "$C-worker-$1"
}

up() {
  [ $# -ge 1 ] || die "up needs the library folder (up LIBRARY [N])"
  local lib n=${2:-2}
  [ -d "$1" ] || die "$1: no such folder"
  lib=$(cd "$1" && pwd)
  [[ $n =~ ^[0-9]+$ ]] || die "N must be a number of workers (got $n)"
  "${P[@]}" image exists "$IMAGE" || die "no image $IMAGE (run: build)"
  "${P[@]}" network exists "$NET" || "${P[@]}" network create "$NET" >/dev/null
  "${P[@]}" volume exists "$C-state" || "${P[@]}" volume create "$C-state" >/dev/null
  echo "$lib" > "$("${P[@]}" volume inspect "$C-state" --format '{{.Mountpoint}}')/library"
  if ! "${P[@]}" container exists "$C-redis"; then
    "${P[@]}" run -d "${LIMITS[@]}" --name "$C-redis" --network "$NET" --label "tagger.cluster=$C" \
      --label tagger.role=redis -v "$C-redis-data:/data" localhost/tagger-redis:latest >/dev/null
  fi
  if ! "${P[@]}" container exists "$C-postgres"; then
    "${P[@]}" run -d "${LIMITS[@]}" --name "$C-postgres" --network "$NET" --label "tagger.cluster=$C" \
      --label tagger.role=postgres -e POSTGRES_PASSWORD="$PG_PASSWORD" --shm-size 128m \
      -v "$C-postgres-data:/var/lib/postgresql/data" localhost/tagger-postgres:latest >/dev/null
  fi
  "${P[@]}" start "$C-redis" "$C-postgres" >/dev/null
  wait_for "$C-redis" redis-cli ping
  wait_for "$C-postgres" pg_isready -h 127.0.0.1 -U tagger -d tagger
  # the schema, before any worker uses the database (a no-op when it is current)
  "${P[@]}" run --rm "${LIMITS[@]}" "${USER_FLAG[@]}" --network "$NET" "${ENVS[@]}" "$IMAGE" db upgrade
  scale "$n"
}

scale() {
  [[ ${1:-} =~ ^[0-9]+$ ]] || die "scale needs a number of workers"
  local n=$1 i name
  for i in $(seq 1 "$n"); do
    name=$C-worker-$i
    if "${P[@]}" container exists "$name"; then
      "${P[@]}" start "$name" >/dev/null
    else
      start_worker "$i" >/dev/null
    fi
  done
  for name in $(worker_names); do
    i=${name##*-}
    # SIGTERM: a worker finishes its current job before it stops
    [ "$i" -gt "$n" ] && "${P[@]}" rm -f -t 600 "$name" >/dev/null
  done
  echo "$n worker container(s): $(worker_names | tr '\n' ' ')"
}

scan() {
  local lib; lib=$(library)
  "${P[@]}" run --rm --init "${LIMITS[@]}" "${USER_FLAG[@]}" --name "$C-scan" --hostname "$C-scan" \
    --network "$NET" --label "tagger.cluster=$C" --label tagger.role=scan "${ENVS[@]}" \
    -v "$lib:/library:rw" "$IMAGE" scan /library --wait "$@"
}

status() {
  library >/dev/null
  "${P[@]}" ps -a --filter "label=tagger.cluster=$C" --format '{{.Names}}\t{{.Status}}'
  "${P[@]}" run --rm "${LIMITS[@]}" --network "$NET" "${ENVS[@]}" "$IMAGE" status "$@"
}

down() {
  local ids role
  # workers first: a stopping worker hands its prefetched jobs back to Redis, which must still be up
  for role in worker scan redis postgres; do
    ids=$("${P[@]}" ps -aq --filter "label=tagger.cluster=$C" --filter "label=tagger.role=$role")
    [ -z "$ids" ] || "${P[@]}" rm -f -t 30 $ids >/dev/null
  done
  if [ "${1:-}" = --volumes ]; then
    "${P[@]}" volume rm -f "$C-redis-data" "$C-postgres-data" "$C-state" >/dev/null 2>&1 || true
  fi
  "${P[@]}" network exists "$NET" && "${P[@]}" network rm "$NET" >/dev/null
  echo "cluster $C is down"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  build) build ;;
  up) up "$@" ;;
  scan) scan "$@" ;;
  scale) scale "$@" ;;
  status) status "$@" ;;
  logs) [ $# -eq 1 ] || die "logs needs a container name (worker-1, redis, postgres)"; "${P[@]}" logs "$C-$1" ;;
  down) down "$@" ;;
  -h|--help|help) usage ;;
  "") usage >&2; exit 2 ;;
  *) die "unknown command $cmd (see --help)" ;;
esac
