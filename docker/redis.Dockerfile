# Redis for tagger's queue, from Debian's package on the same base as the tagger image.
#   podman build -f docker/redis.Dockerfile --build-arg BASE=localhost/debian:bookworm -t tagger-redis docker
# The append-only file (fsync every second) keeps queued jobs across a restart of the container.
ARG BASE=python:3.11-slim
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
USER redis
WORKDIR /data
VOLUME /data
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data", \
     "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
