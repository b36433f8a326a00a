#!/bin/busybox sh
# /init of the cgroup v2 test VM's initramfs (tests/cgroup2_vm_test.sh builds
# it). It mounts a pure cgroup v2 hierarchy, the host's root read-only and the
# test's writable share (both virtio-9p), then switch_roots into the host's
# root to run the guest script. switch_root, not chroot: the kernel refuses
# new user namespaces to chrooted processes, and the sandbox makes them.
# The root is read-only and does not change during a test, so its pages and
# names are cached (cache=loose): start-up of the test binaries is much faster.
# Kernel command line: kiln.share=DIR (the share, mounted at the same path as
# on the host) kiln.script=FILE (run as PID 1 in the new root), and any number
# of kiln.mount=TAG:DIR (more host directories under /tmp, which the guest's
# own /tmp would hide, e.g. a checkout in /tmp; mounted at the same path).
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
  echo "kiln-vm-init: $*" >&2
  poweroff -f
}

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sys /sys || fail "mount /sys"
mount -t devtmpfs dev /dev || fail "mount /dev"
# The Debian kernel has virtio and 9p as modules; 9p needs netfs and fscache.
for module in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
              9pnet 9pnet_virtio netfs fscache 9p; do
  insmod "/modules/$module.ko" || fail "insmod $module"
done
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
# As systemd does on a v2 host: the root cgroup hands these to its children.
echo "+memory +pids +cpu" > /sys/fs/cgroup/cgroup.subtree_control || fail "enable controllers"

share=""
script=""
mounts=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    kiln.share=*) share=${arg#kiln.share=} ;;
    kiln.mount=*) mounts="$mounts ${arg#kiln.mount=}" ;;
    kiln.script=*) script=${arg#kiln.script=} ;;
  esac
done
[ -n "$share" ] && [ -n "$script" ] || fail "kiln.share= and kiln.script= are needed"

options=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /newroot
mount -t 9p -o "$options,ro,cache=loose" hostroot /newroot || fail "mount the host's root"
# The host's /tmp and /run stay the host's: the guest gets its own.
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp || fail "tmpfs /tmp"
mount -t tmpfs -o mode=0755 tmpfs /newroot/run || fail "tmpfs /run"
mkdir -p "/newroot$share"
mount -t 9p -o "$options" share "/newroot$share" || fail "mount the share"
for entry in $mounts; do
  tag=${entry%%:*}
  dir=${entry#*:}
  mkdir -p "/newroot$dir"
  mount -t 9p -o "$options" "$tag" "/newroot$dir" || fail "mount $dir"
done
for dir in /dev /proc /sys; do
  mount --move "$dir" "/newroot$dir" || fail "move $dir"
done
exec switch_root /newroot /bin/bash "$script"
