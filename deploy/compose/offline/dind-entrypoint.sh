#!/bin/sh
# Get the container ready for an engine of its own, then start it ("$@").
set -eu
# Without --privileged (deploy/compose/compose.limited-caps.yaml) /proc/sys and
# the cgroup file systems come read-only. /proc/sys can be made writable; a
# read-only cgroup v1 controller cannot, but with SYS_ADMIN it can be mounted
# afresh, writable, in its place (as a privileged container would see it).
mount -o remount,rw /proc/sys 2>/dev/null || :
awk '$3 == "cgroup" && $2 ~ /^\/sys\/fs\/cgroup\// && $4 ~ /^ro,/ {print $2, $4}' \
  /proc/mounts |
while read -r dir opts; do
  kinds=$(printf '%s\n' "$opts" | tr ',' '\n' \
    | grep -vx -e ro -e rw -e nosuid -e nodev -e noexec -e relatime | paste -sd, -)
  umount "$dir" && mount -t cgroup -o "$kinds" cgroup "$dir" || :
done
if grep -q " /sys/fs/cgroup cgroup2 ro," /proc/mounts; then
  mount -o remount,rw /sys/fs/cgroup 2>/dev/null || :
fi
# With cgroup v2, the engine can only make cgroups for its containers once no
# process sits in the container's root cgroup: move them into a child first.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  mkdir -p /sys/fs/cgroup/init
  xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/init/cgroup.procs || :
  sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers \
    > /sys/fs/cgroup/cgroup.subtree_control
fi
exec "$@"
