#!/usr/bin/env bash
# Kiln's cgroup v2 code on a real cgroup v2 kernel: boots a small VM (qemu
# software emulation; this host's own hierarchy is v1 and must not be
# touched) with Debian's 6.1 kernel and cgroup_no_v1=all, shares the host's
# root read-only, and runs tests/cgroup2_vm/guest.sh inside: kiln-sandbox's
# limit tests (memory with OOM reported, pids, cpu throttling, cgroup removed
# afterwards), the removal of a crash's leftover cgroups, and kiln-worker in a
# delegated cgroup as systemd (Delegate=yes) starts it.
#
# The kernel and the initramfs are cached in ~/.cache/kiln-cgroup2-vm/. Needs
# qemu-system-x86 and busybox-static (dev.sh installs them) and, on the first
# run, apt-get download of linux-image-6.1.0-*-amd64.
#   usage: tests/cgroup2_vm_test.sh BUILD_DIR/bin
set -euo pipefail
BIN_DIR=$(realpath "$1")
BUILD_DIR=$(dirname "$BIN_DIR")
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/kiln-cgroup2-vm
MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
         9pnet 9pnet_virtio netfs fscache 9p)
MODULE_PATHS=(drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
              drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/9p/9pnet
              net/9p/9pnet_virtio fs/netfs/netfs fs/fscache/fscache fs/9p/9p)
VM_TIMEOUT=${KILN_CGROUP2_VM_TIMEOUT:-240}

SHARE=""
QEMU_PID=""
cleanup() {
  if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2> /dev/null; then
    kill -KILL "$QEMU_PID" 2> /dev/null || true
    wait "$QEMU_PID" 2> /dev/null || true
  fi
  [[ -z $SHARE ]] || rm -rf "$SHARE"
}
trap cleanup EXIT

# The kernel package Debian currently points linux-image-amd64 at (a 6.1.0-N),
# else the newest 6.1.0-N the index knows.
kernel_package() {
  local package
  package=$(apt-cache depends linux-image-amd64 2> /dev/null |
    sed -n 's/.*Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -1)
  [[ -n $package ]] || package=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' |
    cut -d' ' -f1 | sort -t- -k4,4n | tail -1)
  echo "$package"
}

# $CACHE/kernel/{vmlinuz,modules/*.ko}: downloaded and unpacked once.
fetch_kernel() {
  [[ -f $CACHE/kernel/vmlinuz && -f $CACHE/kernel/modules/9p.ko ]] && return 0
  local package version work
  package=$(kernel_package)
  [[ -n $package ]] || { echo "no linux-image-6.1.0-*-amd64 in the apt index (apt-get update?)" >&2; return 1; }
  version=${package#linux-image-}
  echo "cgroup2_vm_test: fetching $package (first run only)" >&2
  mkdir -p "$CACHE"
  work=$(mktemp -d "$CACHE/download.XXXXXX")
  chmod 755 "$work"  # apt's _apt user writes the download here
  (cd "$work" && { apt-get download -q "$package" || { apt-get update -q && apt-get download -q "$package"; }; }) >&2
  local paths=("./boot/vmlinuz-$version")
  for path in "${MODULE_PATHS[@]}"; do paths+=("./lib/modules/$version/kernel/$path.ko"); done
  mkdir -p "$work/unpacked" "$work/kernel/modules"
  dpkg-deb --fsys-tarfile "$work"/linux-image-*.deb | tar -x -C "$work/unpacked" "${paths[@]}"
  mv "$work/unpacked/boot/vmlinuz-$version" "$work/kernel/vmlinuz"
  find "$work/unpacked/lib/modules" -name '*.ko' -exec mv {} "$work/kernel/modules/" \;
  echo "$package" > "$work/kernel/package"
  rm -rf "$CACHE/kernel"
  mv "$work/kernel" "$CACHE/kernel"
  rm -rf "$work"
}

# $CACHE/initramfs-HASH.cpio: busybox, the modules and init.sh; rebuilt when
# one of them changes.
build_initramfs() {
  local hash image root
  hash=$(cat "$HERE/cgroup2_vm/init.sh" /bin/busybox "$CACHE/kernel/package" | sha256sum | cut -c1-16)
  image=$CACHE/initramfs-$hash.cpio
  if [[ ! -f $image ]]; then
    root=$(mktemp -d "$CACHE/initramfs.XXXXXX")
    mkdir -p "$root/bin" "$root/modules" "$root/proc" "$root/sys" "$root/dev"
    cp /bin/busybox "$root/bin/busybox"
    cp "$HERE/cgroup2_vm/init.sh" "$root/init"
    chmod 755 "$root/init"
    for module in "${MODULES[@]}"; do cp "$CACHE/kernel/modules/$module.ko" "$root/modules/"; done
    rm -f "$CACHE"/initramfs-*.cpio
    (cd "$root" && find . | busybox cpio -o -H newc > "$image.tmp" 2> /dev/null)
    mv "$image.tmp" "$image"
    rm -rf "$root"
  fi
  echo "$image"
}

for tool in qemu-system-x86_64 busybox apt-get dpkg-deb flock; do
  command -v "$tool" > /dev/null || { echo "cgroup2_vm_test: $tool is missing (./dev.sh deps)" >&2; exit 1; }
done
prepare_start=$(date +%s.%N)
# One preparer at a time: worktrees share the cache.
mkdir -p "$CACHE"
exec 9> "$CACHE/lock"
flock 9
fetch_kernel
INITRAMFS=$(build_initramfs)
flock -u 9
prepare_seconds=$(echo "$(date +%s.%N) - $prepare_start" | bc)

# The share is where the guest writes; it appears at the same path inside,
# so that paths in its logs are the host's.
SHARE=$(mktemp -d /tmp/kiln-cgroup2-vm.XXXXXX)
chmod 755 "$SHARE"
echo "BUILD_DIR=$BUILD_DIR" > "$SHARE/config.sh"
cp "$HERE/cgroup2_vm/guest.sh" "$SHARE/guest.sh"
: > "$SHARE/results"

# The guest's /tmp is its own, so a source or build tree under the host's
# /tmp (a CI checkout) is shared at its own path too.
EXTRA_SHARES=()
EXTRA_MOUNTS=""
SOURCE_DIR=$(cd "$HERE/.." && pwd)
n=0
for dir in "$SOURCE_DIR" "$BUILD_DIR"; do
  [[ $dir == /tmp/* ]] || continue
  [[ $dir == "$SOURCE_DIR"/* && $dir != "$SOURCE_DIR" ]] && [[ $SOURCE_DIR == /tmp/* ]] && continue
  EXTRA_SHARES+=(-virtfs "local,path=$dir,mount_tag=tree$n,security_model=none,multidevs=remap")
  EXTRA_MOUNTS+=" kiln.mount=tree$n:$dir"
  n=$((n + 1))
done

boot_start=$(date +%s.%N)
qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 -nographic -no-reboot -nic none \
  -kernel "$CACHE/kernel/vmlinuz" -initrd "$INITRAMFS" \
  -append "console=ttyS0 panic=-1 cgroup_no_v1=all quiet kiln.share=$SHARE kiln.script=$SHARE/guest.sh$EXTRA_MOUNTS" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs "local,path=$SHARE,mount_tag=share,security_model=none,multidevs=remap" \
  "${EXTRA_SHARES[@]}" \
  > "$SHARE/console.log" 2>&1 < /dev/null &
QEMU_PID=$!
timed_out=0
for _ in $(seq $((VM_TIMEOUT * 10))); do
  kill -0 "$QEMU_PID" 2> /dev/null || break
  sleep 0.1
done
if kill -0 "$QEMU_PID" 2> /dev/null; then
  timed_out=1
  kill -KILL "$QEMU_PID"
fi
wait "$QEMU_PID" || true
QEMU_PID=""
vm_seconds=$(echo "$(date +%s.%N) - $boot_start" | bc)

echo "--- guest log"
cat "$SHARE/guest.log" 2> /dev/null || true
echo "---"
echo "kernel $(cat "$CACHE/kernel/package"); kernel+initramfs ready in ${prepare_seconds}s; VM ran ${vm_seconds}s"
sed -n 's/^guest: up after \(.*\) s$/guest booted (guest clock): \1 s/p' "$SHARE/guest.log" 2> /dev/null || true
cat "$SHARE/results"
failed=0
if [[ $timed_out == 1 ]]; then
  echo "FAIL: the VM did not finish within ${VM_TIMEOUT}s" >&2
  failed=1
fi
if ! grep -qx DONE "$SHARE/results" || grep -q '^FAIL' "$SHARE/results"; then failed=1; fi
for name in sandbox_limits leftover_cleanup worker_delegated worker_undelegated; do
  grep -q "^PASS $name " "$SHARE/results" || { echo "FAIL: $name did not pass" >&2; failed=1; }
done
if [[ $failed == 1 ]]; then
  echo "--- console" >&2
  tail -50 "$SHARE/console.log" >&2
  exit 1
fi
echo "cgroup2_vm_test: all passed"
