#!/usr/bin/env bash
# remotetool, the command-line client of the REAPI Go SDK
# (github.com/bazelbuild/remote-apis-sdks, built by tests/gotools/build.sh),
# against a real kiln-worker, as a user of another REAPI server would use it:
#   - upload_dir / download_dir round trip of a tree with an executable, an
#     empty directory, a relative symlink and a 12 MiB file (ByteStream, not
#     a batch), byte-identical, with the same root digest as `kiln cas put`;
#   - execute_action of a command with file and directory outputs, then
#     download_action_result, the outputs byte-identical and executable;
#   - check_determinism passes a deterministic action and catches a
#     nondeterministic one;
#   - download_action of an action carrying container-image on a worker that
#     declares that image (--platform).
set -euo pipefail
BIN_DIR=$(cd "${1:?usage: $0 BIN_DIR}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/kiln-remotetool.XXXXXX)
source "$ROOT/tests/start_worker.sh"
cleanup() {
  stop_worker
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; tail -20 "$WORK/w/worker.log" >&2 || true; exit 1; }

GOTOOLS=$("$ROOT/tests/gotools/build.sh") || fail "building the Go tools"
IMAGE=docker://gcr.io/kiln-test/ubuntu@sha256:0000000000000000000000000000000000000000000000000000000000000001
start_worker "$WORK/w" --concurrency=2 --platform=container-image=$IMAGE || fail "worker did not start"
remotetool() {
  "$GOTOOLS/remotetool" --service="127.0.0.1:$GRPC_PORT" --service_no_security --instance= \
    --logtostderr "$@"
}

echo "--- upload_dir / download_dir"
TREE=$WORK/tree
mkdir -p "$TREE/bin" "$TREE/empty" "$TREE/sub/deep"
printf '#!/bin/sh\necho tool\n' > "$TREE/bin/tool"
chmod 755 "$TREE/bin/tool"
echo "plain" > "$TREE/sub/deep/file.txt"
head -c $((12 << 20)) /dev/urandom > "$TREE/big.bin"
ln -s bin/tool "$TREE/link"
remotetool --operation=upload_dir --path="$TREE" --symlink_behavior=preserve --json="$WORK/upload.json" \
  2> "$WORK/upload.log" || { cat "$WORK/upload.log" >&2; fail "upload_dir"; }
ROOT_DIGEST=$(/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["RootDigest"]; print("%s/%d" % (d["Hash"], d["Size"]))' "$WORK/upload.json")
echo "  root $ROOT_DIGEST"
KILN_DIGEST=$("$BIN_DIR/kiln" cas put --server="127.0.0.1:$GRPC_PORT" "$TREE")
[[ "$KILN_DIGEST" == "$ROOT_DIGEST" ]] || fail "remotetool's root $ROOT_DIGEST differs from kiln's $KILN_DIGEST"
remotetool --operation=download_dir --digest="$ROOT_DIGEST" --path="$WORK/down" 2> "$WORK/download.log" ||
  { cat "$WORK/download.log" >&2; fail "download_dir"; }
diff -r --no-dereference "$TREE" "$WORK/down" || fail "download_dir gave a different tree"
[[ -x "$WORK/down/bin/tool" ]] || fail "the executable lost its mode"
[[ ! -x "$WORK/down/sub/deep/file.txt" ]] || fail "a plain file became executable"
[[ -d "$WORK/down/empty" && -z "$(ls -A "$WORK/down/empty")" ]] || fail "the empty directory is missing"
[[ "$(readlink "$WORK/down/link")" == "bin/tool" ]] || fail "the symlink was not kept"

echo "--- execute_action, download_action_result"
ACT=$WORK/act
mkdir -p "$ACT/input"
echo "input content" > "$ACT/input/in.txt"
cat > "$ACT/cmd.textproto" <<'EOF'
arguments: "/bin/sh"
arguments: "-c"
arguments: "mkdir -p out/dir && cp in.txt out/copy.txt && printf '#!/bin/sh\\necho hi\\n' > out/dir/tool && chmod +x out/dir/tool && echo executed"
output_paths: "out/copy.txt"
output_paths: "out/dir"
EOF
echo 'do_not_cache: false' > "$ACT/ac.textproto"
remotetool --operation=execute_action --action_root="$ACT" --path="$WORK/exec-outputs" > "$WORK/exec.out" 2> "$WORK/exec.log" ||
  { cat "$WORK/exec.out" "$WORK/exec.log" >&2; fail "execute_action"; }
grep -q "^executed$" "$WORK/exec.out" || { cat "$WORK/exec.out" >&2; fail "the action's stdout is missing"; }
ACTION_DIGEST=$(sed -n 's/^Action digest: //p' "$WORK/exec.out")
[[ -n "$ACTION_DIGEST" ]] || fail "no action digest in execute_action's output"
echo "  action $ACTION_DIGEST"
remotetool --operation=download_action_result --digest="$ACTION_DIGEST" --path="$WORK/result" \
  2> "$WORK/result.log" || { cat "$WORK/result.log" >&2; fail "download_action_result"; }
cmp "$ACT/input/in.txt" "$WORK/result/out/copy.txt" || fail "out/copy.txt differs"
[[ -x "$WORK/result/out/dir/tool" && "$("$WORK/result/out/dir/tool")" == "hi" ]] ||
  fail "out/dir/tool is not the executable the action wrote"

echo "--- check_determinism"
remotetool --operation=check_determinism --action_root="$ACT" --exec_attempts=3 > /dev/null 2> "$WORK/det.log" ||
  { cat "$WORK/det.log" >&2; fail "a deterministic action was reported nondeterministic"; }
NONDET=$WORK/nondet
mkdir -p "$NONDET/input"
cat > "$NONDET/cmd.textproto" <<'EOF'
arguments: "/bin/sh"
arguments: "-c"
arguments: "head -c 16 /dev/urandom > random.bin"
output_paths: "random.bin"
EOF
touch "$NONDET/ac.textproto"
if remotetool --operation=check_determinism --action_root="$NONDET" --exec_attempts=3 > /dev/null \
     2> "$WORK/nondet.log"; then
  fail "check_determinism did not catch a nondeterministic action"
fi
grep -q "not deterministic" "$WORK/nondet.log" || { cat "$WORK/nondet.log" >&2; fail "check_determinism failed for another reason"; }

echo "--- download_action of an action carrying container-image"
IMG=$WORK/img
mkdir -p "$IMG/input/src"
echo "source" > "$IMG/input/src/a.txt"
cat > "$IMG/cmd.textproto" <<EOF
arguments: "/bin/sh"
arguments: "-c"
arguments: "wc -c < src/a.txt > count.txt"
output_paths: "count.txt"
platform: { properties: { name: "container-image" value: "$IMAGE" } }
EOF
touch "$IMG/ac.textproto"
remotetool --operation=execute_action --action_root="$IMG" --path="$WORK/img-outputs" > "$WORK/img.out" 2> "$WORK/img.log" ||
  { cat "$WORK/img.out" "$WORK/img.log" >&2; fail "execute_action with container-image"; }
IMG_DIGEST=$(sed -n 's/^Action digest: //p' "$WORK/img.out")
remotetool --operation=download_action --digest="$IMG_DIGEST" --path="$WORK/downloaded" < /dev/null \
  > /dev/null 2> "$WORK/download_action.log" || { cat "$WORK/download_action.log" >&2; fail "download_action"; }
cmp "$IMG/input/src/a.txt" "$WORK/downloaded/input/src/a.txt" || fail "download_action's input differs"
grep -q "container-image" "$WORK/downloaded/cmd.textproto" || fail "cmd.textproto lost the platform"
grep -q "gcr.io/kiln-test/ubuntu" "$WORK/downloaded/run_locally.sh" || fail "run_locally.sh does not name the image"
grep -q "count.txt" "$WORK/downloaded/action.txt" || fail "action.txt does not list the output"

# A worker that does not declare the image refuses the action by name.
stop_worker
start_worker "$WORK/w2" --concurrency=1 || fail "second worker did not start"
if remotetool --operation=execute_action --action_root="$IMG" --path="$WORK/refused-outputs" > "$WORK/refused.out" 2> "$WORK/refused.log"; then
  fail "a worker without --platform ran an action asking for container-image"
fi
grep -q "container-image" "$WORK/refused.log" "$WORK/refused.out" || { cat "$WORK/refused.log" >&2; fail "the refusal does not name container-image"; }
echo "PASS"
