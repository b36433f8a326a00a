#!/usr/bin/env bash
# Median wall time to spawn /bin/true, in one run, for kiln-sandbox and its
# peers at comparable isolation, and the critical path of a warm kiln-sandbox
# (--serve_fd, as kiln-worker drives it: from the action's request to its
# result, the sandbox prepared beforehand):
#   bench/run_sandbox_bench.sh [RUNS]        (default 200 runs each, as root)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-200}
B=build/bin
LINUX_SANDBOX=/usr/libexec/x86_64-linux-gnu/bazel/linux-sandbox

# bwrap with the same isolation as kiln-sandbox's default: all namespaces, ro
# /usr (and the merged-/usr symlinks kiln-sandbox recreates), /dev, /proc,
# tmpfs /tmp, hostname, a build uid.
BWRAP=(/usr/bin/bwrap --unshare-all --die-with-parent --ro-bind /usr /usr)
for link in /bin /lib /lib64; do
  if [[ -L $link ]]; then BWRAP+=(--symlink "$(readlink $link)" "$link"); else BWRAP+=(--ro-bind "$link" "$link"); fi
done
BWRAP+=(--dev /dev --proc /proc --tmpfs /tmp --hostname localhost --uid 61000 --gid 61000 /bin/true)

declare -A CMD=(
  [kiln-sandbox]="$B/kiln-sandbox -- /bin/true"
  [bwrap]="${BWRAP[*]}"
  [linux-sandbox]="$LINUX_SANDBOX -H -N -- /bin/true"
  [unshare-floor]="/usr/bin/unshare --pid --net --mount --ipc --uts --fork --mount-proc /bin/true"
  [fork-exec]="/bin/true"
)
echo "spawn /bin/true, $RUNS runs each, $(nproc) cores, kernel $(uname -r), commit $(git rev-parse --short HEAD)"
printf "%-15s %10s %10s %10s\n" "" "median ms" "p90 ms" "min ms"
declare -A MEDIAN
for name in fork-exec unshare-floor kiln-sandbox bwrap linux-sandbox; do
  read -r median p90 min < <($B/spawn_bench --runs="$RUNS" -- ${CMD[$name]})
  MEDIAN[$name]=$median
  printf "%-15s %10s %10s %10s\n" "$name" "$median" "$p90" "$min"
done
read -r median p90 min setup completion < <($B/warm_sandbox_bench --sandbox=$B/kiln-sandbox --runs="$RUNS" -- /bin/true)
MEDIAN[kiln-warm]=$median
printf "%-15s %10s %10s %10s   (request->exec %s ms, exit->result %s ms)\n" "kiln-warm" "$median" "$p90" "$min" "$setup" "$completion"
awk -v k="${MEDIAN[kiln-warm]}" -v b="${MEDIAN[bwrap]}" -v u="${MEDIAN[unshare-floor]}" \
  'BEGIN { printf "kiln-warm (request->result) / bwrap = %.2f (goal <= 0.5)\nkiln-warm / unshare floor = %.2f\n", k/b, k/u }'
awk -v k="${MEDIAN[kiln-sandbox]}" -v b="${MEDIAN[bwrap]}" -v u="${MEDIAN[unshare-floor]}" -v l="${MEDIAN[linux-sandbox]}" \
  'BEGIN { printf "kiln-sandbox / bwrap = %.2f (goal <= 0.5)\nkiln-sandbox / unshare floor = %.2f (goal <= 1.5)\nkiln-sandbox / linux-sandbox = %.2f\n", k/b, k/u, k/l }'
