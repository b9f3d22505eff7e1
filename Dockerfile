# kvstore server image.
#
# Real users:   docker build -t kvstore .          (FROM python:3.11-slim, wheels built
#               here from the source with pip, so the build needs PyPI)
# Offline / CI: scripts/docker/build.sh            (FROM a debootstrapped Debian base,
#               BASE_IMAGE=kvstore-base:bookworm, OFFLINE_WHEELS=1: installs only the
#               wheels that the script built on the host into ./wheels; no network)
#
# The image runs `kvstore` as the unprivileged user kvstore (uid 10001); its data
# lives in the volume /var/lib/kvstore. Every server flag can be given as an
# environment variable named like etcd's flag (KVSTORE_INITIAL_CLUSTER, ...).
ARG BASE_IMAGE=python:3.11-slim

# ---- build stage: a virtualenv with kvstore and its locked dependencies ----
# Every dependency is installed from requirements/runtime.txt (exact versions,
# sha256 hashes); the kvstore wheel is built by the locked backend in
# requirements/build.txt, and installed with --no-deps.
FROM ${BASE_IMAGE} AS build
ARG OFFLINE_WHEELS=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# The context is filtered by .dockerignore: pyproject.toml, README.md, kvstore/,
# requirements/, wheels/.
COPY . /src
RUN set -eu; \
    python3 -m venv /opt/kvstore; \
    pip=/opt/kvstore/bin/pip; \
    if [ "$OFFLINE_WHEELS" = 1 ]; then \
        if ! ls /src/wheels/kvstore-*.whl >/dev/null 2>&1; then \
            echo "OFFLINE_WHEELS=1 but wheels/ holds no kvstore wheel: run scripts/docker/build.sh" >&2; \
            exit 1; \
        fi; \
        $pip install --no-index --find-links /src/wheels \
            --require-hashes --no-deps -r /src/requirements/runtime.txt; \
        mkdir -p /wheels; cp /src/wheels/kvstore-*.whl /wheels/; \
    else \
        $pip install --require-hashes --no-deps -r /src/requirements/runtime.txt; \
        python3 -m venv /opt/build; \
        /opt/build/bin/pip install --require-hashes --no-deps -r /src/requirements/build.txt; \
        /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels /src; \
    fi; \
    $pip install --no-index --no-deps /wheels/kvstore-*.whl; \
    $pip check; \
    $pip uninstall -y -q pip setuptools; \
    /opt/kvstore/bin/kvstore --help >/dev/null

# ---- runtime stage ----
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="kvstore" \
      org.opencontainers.image.description="Replicated key-value store speaking the etcd v3 API"
RUN groupadd --system --gid 10001 kvstore \
 && useradd --system --uid 10001 --gid kvstore --home-dir /var/lib/kvstore \
            --no-create-home --shell /usr/sbin/nologin kvstore \
 && mkdir -p /var/lib/kvstore \
 && chown kvstore:kvstore /var/lib/kvstore
COPY --from=build /opt/kvstore /opt/kvstore
# Listen on all container interfaces; advertise/peer URLs must be set per member
# for a cluster (docker-compose.yml does). Alone, the image runs a one-node cluster.
ENV PATH=/opt/kvstore/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    KVSTORE_NAME=default \
    KVSTORE_DATA_DIR=/var/lib/kvstore/data \
    KVSTORE_LISTEN_CLIENT_URLS=http://0.0.0.0:2379 \
    KVSTORE_ADVERTISE_CLIENT_URLS=http://127.0.0.1:2379 \
    KVSTORE_LISTEN_PEER_URLS=http://0.0.0.0:2380 \
    KVSTORE_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.1:2380 \
    KVSTORE_LISTEN_METRICS_URLS=http://0.0.0.0:2381
USER kvstore
WORKDIR /var/lib/kvstore
VOLUME ["/var/lib/kvstore"]
EXPOSE 2379 2380 2381
# GET /health on the first metrics URL: 200 {"health":"true"} when this member sees a
# leader, 503 otherwise (urlopen raises on 503, so the exit code is 1). No curl needed.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import json,os,urllib.request as u; url=os.environ['KVSTORE_LISTEN_METRICS_URLS'].split(',')[0].replace('0.0.0.0','127.0.0.1'); assert json.load(u.urlopen(url+'/health',timeout=2))['health']=='true'"]
ENTRYPOINT ["kvstore"]
