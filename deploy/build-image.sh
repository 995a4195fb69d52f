#!/usr/bin/env bash
# Builds synod's image FROM scratch with buildah: the synod binary given (by default the
# release build) and the synodctl beside it, both without debug info, the shared libraries
# and loader `ldd` lists for them, a non-root user (65532, as distroless's), and the same
# entrypoint, ports, volume and variables as deploy/Containerfile. For machines that
# cannot pull base images. Needs root, buildah and binutils' strip.
#
#   deploy/build-image.sh [SYNOD_BINARY] [IMAGE_NAME]
set -euo pipefail
binary="${1:-target/release/synod}"
image="${2:-localhost/synod:latest}"
synodctl="$(dirname "$binary")/synodctl"
for file in "$binary" "$synodctl"; do
    [ -x "$file" ] || { echo "build-image: no executable $file (cargo build --release -p synod-server -p synodctl first)" >&2; exit 2; }
done

container=$(buildah from scratch)
trap 'buildah rm "$container" >/dev/null 2>&1 || true' EXIT
root=$(buildah mount "$container")

# Symbols stay, so a panic's backtrace still names its functions; debug info goes (it is
# four fifths of a release binary).
install -D -m 0755 "$binary" "$root/usr/local/bin/synod"
install -D -m 0755 "$synodctl" "$root/usr/local/bin/synodctl"
strip --strip-debug "$root/usr/local/bin/synod" "$root/usr/local/bin/synodctl"
# The libraries the binaries link, at the paths the loader looks for them.
ldd "$binary" "$synodctl" | grep -o '/[^ ]*' | grep -v ':$' | sort -u | while read -r library; do
    install -D -m 0755 "$(readlink -f "$library")" "$root$library"
done
install -d -m 0755 "$root/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
install -d -m 1777 "$root/tmp"
install -d -m 0700 -o 65532 -g 65532 "$root/var/lib/synod"
install -d -m 0755 -o 65532 -g 65532 "$root/home/nonroot"

buildah unmount "$container" >/dev/null
buildah config \
    --entrypoint '["/usr/local/bin/synod"]' \
    --env ETCD_DATA_DIR=/var/lib/synod \
    --port 2379 --port 2380 --port 2381 \
    --volume /var/lib/synod \
    --user 65532:65532 \
    --label org.opencontainers.image.title=synod \
    "$container"
buildah commit --quiet "$container" "$image" >/dev/null
echo "$image"
