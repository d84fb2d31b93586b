# PostgreSQL for tagger's results, from Debian's package on the same base as the tagger image.
#   podman build -f docker/postgres.Dockerfile --build-arg BASE=localhost/debian:bookworm -t tagger-postgres docker
# The first start makes the cluster in /var/lib/postgresql/data (a volume) with the database
# POSTGRES_DB owned by POSTGRES_USER, password POSTGRES_PASSWORD (md5 from other hosts).
ARG BASE=python:3.11-slim
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /run/postgresql
COPY postgres-start.sh /usr/local/bin/postgres-start
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data \
    POSTGRES_USER=tagger POSTGRES_PASSWORD=tagger POSTGRES_DB=tagger
USER postgres
VOLUME /var/lib/postgresql/data
EXPOSE 5432
# SIGTERM is a smart shutdown: it would wait for every client (the workers) to leave
STOPSIGNAL SIGINT
CMD ["postgres-start"]
