#!/usr/bin/env bash
# build-etcd-standin.sh — an image that runs the real etcd in kvstore's clothes.
#
# For checking the Docker test harness itself: the image is the kvstore image
# (same user, volume, health check, Python with kvstore.pb for `docker exec`)
# with the host's etcd binary as the server, reading the same KVSTORE_* variables
# (mapped to etcd's ETCD_* ones). If tests/docker pass against it and fail
# against kvstore, the failure is kvstore's, not the harness's:
#
#   scripts/docker/build-etcd-standin.sh
#   KVSTORE_DOCKER_TEST_IMAGE=kvstore:etcd-standin python -m pytest tests/docker/test_docker_cluster.py
#
# Environment: KVSTORE_IMAGE (the kvstore image to start from, default kvstore:latest),
# KVSTORE_STANDIN_IMAGE (tag to produce, default kvstore:etcd-standin), ETCD_BIN.
set -euo pipefail

FROM_IMAGE="${KVSTORE_IMAGE:-kvstore:latest}"
TAG="${KVSTORE_STANDIN_IMAGE:-kvstore:etcd-standin}"
ETCD="$(readlink -f "${ETCD_BIN:-$(command -v etcd)}")"

CTX=$(mktemp -d "${TMPDIR:-/tmp}/kvstore-etcd.XXXXXX")
trap 'rm -rf "$CTX"' EXIT
cp "$ETCD" "$CTX/etcd"
cat > "$CTX/entrypoint.sh" <<'SH'
#!/bin/sh
export ETCD_NAME="$KVSTORE_NAME" ETCD_DATA_DIR="$KVSTORE_DATA_DIR" \
       ETCD_LISTEN_CLIENT_URLS="$KVSTORE_LISTEN_CLIENT_URLS" \
       ETCD_ADVERTISE_CLIENT_URLS="$KVSTORE_ADVERTISE_CLIENT_URLS" \
       ETCD_LISTEN_PEER_URLS="$KVSTORE_LISTEN_PEER_URLS" \
       ETCD_INITIAL_ADVERTISE_PEER_URLS="$KVSTORE_INITIAL_ADVERTISE_PEER_URLS" \
       ETCD_INITIAL_CLUSTER="${KVSTORE_INITIAL_CLUSTER:-$KVSTORE_NAME=$KVSTORE_INITIAL_ADVERTISE_PEER_URLS}" \
       ETCD_INITIAL_CLUSTER_STATE="${KVSTORE_INITIAL_CLUSTER_STATE:-new}" \
       ETCD_INITIAL_CLUSTER_TOKEN="${KVSTORE_INITIAL_CLUSTER_TOKEN:-etcd-cluster}" \
       ETCD_LISTEN_METRICS_URLS="$KVSTORE_LISTEN_METRICS_URLS"
exec etcd "$@"
SH
chmod +x "$CTX/etcd" "$CTX/entrypoint.sh"
cat > "$CTX/Dockerfile" <<DOCKERFILE
FROM $FROM_IMAGE
COPY etcd entrypoint.sh /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
DOCKERFILE
docker build -q -t "$TAG" "$CTX" >/dev/null
echo "build-etcd-standin: $TAG (etcd $("$ETCD" --version | head -n1 | awk '{print $3}') on $FROM_IMAGE)"
