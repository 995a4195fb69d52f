#!/usr/bin/env bash
# Proves synod's container image here, where no container runtime can run it: builds the
# image FROM scratch with buildah (deploy/build-image.sh), mounts it with `podman image
# mount`, and runs a 3-member cluster from copies of the image's filesystem with chroot, as
# the image's user, with its entrypoint and environment and ETCD_* variables only. Then
# etcdctl and the image's synodctl check the cluster, one member is killed, and the others
# go on. Needs root, buildah, podman and etcdctl. Cleans up everything it made.
#
#   scripts/image-smoke.sh [SYNOD_BINARY]     (default target/release/synod)
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${1:-target/release/synod}"
image="localhost/synod:smoke-$$"
work=$(mktemp -d /tmp/synod-image-smoke.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    podman image unmount "$image" >/dev/null 2>&1 || true
    buildah rmi "$image" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

deploy/build-image.sh "$binary" "$image" >/dev/null
mount=$(podman image mount "$image")
config=$(podman image inspect --format '{{json .Config}}' "$image")
read_config() { python3 -c "import json,sys; c=json.loads(sys.argv[1]); print($1)" "$config"; }
entrypoint=$(read_config "' '.join(c['Entrypoint'])")
user=$(read_config "c['User']")
mapfile -t image_env < <(read_config "'\n'.join(c['Env'])")
echo "image-smoke: $image: entrypoint $entrypoint, user $user, $(du -sh "$mount" | cut -f1)"

chroot=$(command -v chroot)
base=$((20000 + $$ % 10000))
cluster=""
for i in 0 1 2; do cluster+="${cluster:+,}m$i=http://127.0.0.1:$((base + 10 * i + 1))"; done
for i in 0 1 2; do
    rootfs="$work/m$i"
    cp -a "$mount" "$rootfs"
    client="http://127.0.0.1:$((base + 10 * i))"
    peer="http://127.0.0.1:$((base + 10 * i + 1))"
    env -i "${image_env[@]}" \
        ETCD_NAME="m$i" ETCD_INITIAL_CLUSTER="$cluster" ETCD_INITIAL_CLUSTER_TOKEN=image-smoke \
        ETCD_LISTEN_CLIENT_URLS="$client" ETCD_ADVERTISE_CLIENT_URLS="$client" \
        ETCD_LISTEN_PEER_URLS="$peer" ETCD_INITIAL_ADVERTISE_PEER_URLS="$peer" \
        ETCD_LISTEN_METRICS_URLS="http://127.0.0.1:$((base + 10 * i + 2))" \
        "$chroot" --userspec="$user" "$rootfs" $entrypoint >"$work/m$i.log" 2>&1 &
    pids+=($!)
    disown
done

endpoints="127.0.0.1:$base,127.0.0.1:$((base + 10)),127.0.0.1:$((base + 20))"
etcdctl() { ETCDCTL_API=3 command etcdctl --endpoints="$endpoints" --dial-timeout=1s --command-timeout=3s "$@"; }
healthy() {
    for _ in $(seq 1 60); do
        if etcdctl endpoint health >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    return 1
}
if ! healthy; then
    echo "image-smoke: the cluster did not become healthy" >&2
    tail -n 20 "$work"/m*.log >&2
    exit 1
fi
etcdctl put from-the-image yes >/dev/null
etcdctl member list
# The image's own synodctl, as its user, reads what etcdctl wrote.
value=$(env -i "$chroot" --userspec="$user" "$work/m1" /usr/local/bin/synodctl \
    --endpoints="$endpoints" get from-the-image --print-value-only)
[ "$value" = yes ] || { echo "image-smoke: the image's synodctl read: $value" >&2; exit 1; }
probe=$(curl -s "http://127.0.0.1:$((base + 2))/readyz")
[ "$probe" = ok ] || { echo "image-smoke: /readyz on the metrics port said: $probe" >&2; exit 1; }
kill -9 "${pids[0]}"
endpoints="127.0.0.1:$((base + 10)),127.0.0.1:$((base + 20))"
healthy || { echo "image-smoke: two members did not serve after the third was killed" >&2; exit 1; }
[ "$(etcdctl get from-the-image --print-value-only)" = yes ] || { echo "image-smoke: the value is gone" >&2; exit 1; }
owner=$(stat -c %u "$work/m1/var/lib/synod/member")
[ "$owner" = 65532 ] || { echo "image-smoke: data written as uid $owner, not the image's user" >&2; exit 1; }
echo "image-smoke: a 3-member cluster ran from the image's filesystem as uid $owner, and survived a kill -9"
