#!/usr/bin/env bash
# Runs a benchmark with its scratch directories (KILN_BENCH_DIR: the
# workers' state dirs, Bazel's output root) on a journaled ext4 made for the
# run in an image file and loop-mounted (as root), then removes it. For hosts
# whose own filesystem is an ext4 without a journal, where every new inode
# costs a scan (docs/operations.md, "The state dir's filesystem"):
#   bench/with_journaled_fs.sh bench/run_bazel_bench.sh 300 8
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 BENCHMARK [ARGS...]" >&2; exit 2; }
SCRATCH=$(mktemp -d /var/tmp/kiln-journaled-fs.XXXXXX)
MOUNTED=""
cleanup() {
  [[ -n "$MOUNTED" ]] && umount "$SCRATCH/mnt"
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
# Sparse: blocks are used only as the benchmark writes them.
truncate -s "${KILN_BENCH_FS_SIZE:-32G}" "$SCRATCH/fs.img"
mkfs.ext4 -q -F "$SCRATCH/fs.img"
mkdir "$SCRATCH/mnt"
mount -o loop "$SCRATCH/fs.img" "$SCRATCH/mnt"
MOUNTED=1
echo "scratch: journaled ext4 at $SCRATCH/mnt" >&2
KILN_BENCH_DIR="$SCRATCH/mnt" "$@"
