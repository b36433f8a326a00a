"""Starlark rules the way many real rule sets write them: run_shell without
use_default_shell_env, so the actions get no PATH at all and bash falls back
on its built-in default path; a tree artifact; executable outputs run as
tools by later actions. (`find -L`: Bazel's local sandbox stages inputs as
symlinks, a remote worker as files.)"""

def _tree_impl(ctx):
    out = ctx.actions.declare_directory(ctx.label.name)
    ctx.actions.run_shell(
        outputs = [out],
        inputs = ctx.files.srcs,
        arguments = [out.path] + [f.path for f in ctx.files.srcs],
        command = """
out=$1; shift
mkdir -p "$out/sub/deeper"
for f in "$@"; do cp "$f" "$out/sub/"; done
printf '#!/bin/sh\\necho "tree tool: $(basename "$0")"\\n' > "$out/tool"
chmod 755 "$out/tool"
echo "exported PATH variables: $(env | grep -c '^PATH=' || true)" > "$out/sub/deeper/path.txt"
""",
        mnemonic = "KilnTree",
    )
    return [DefaultInfo(files = depset([out]))]

tree = rule(implementation = _tree_impl, attrs = {"srcs": attr.label_list(allow_files = True)})

def _tree_listing_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".txt")
    ctx.actions.run_shell(
        outputs = [out],
        inputs = [ctx.file.tree],
        arguments = [ctx.file.tree.path, out.path],
        command = """
{ (cd "$1" && find -L . -type f | LC_ALL=C sort | while read -r f; do
    echo "$f $(wc -c < "$f") $(test -x "$f" && echo x || echo -)"; done)
  "$1/tool"
} > "$2"
""",
        mnemonic = "KilnTreeListing",
    )
    return [DefaultInfo(files = depset([out]))]

tree_listing = rule(
    implementation = _tree_listing_impl,
    attrs = {"tree": attr.label(allow_single_file = True)},
)

def _script_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name)
    ctx.actions.run_shell(
        outputs = [out],
        arguments = [out.path, ctx.attr.message],
        command = """printf '#!/bin/sh\\necho "%s" > "$1"\\nuname -s >> "$1"\\n' "$2" > "$1"; chmod 755 "$1" """,
        mnemonic = "KilnScript",
    )
    return [DefaultInfo(executable = out, files = depset([out]))]

script = rule(implementation = _script_impl, executable = True, attrs = {"message": attr.string()})

def _run_tool_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".out")
    ctx.actions.run(
        outputs = [out],
        executable = ctx.executable.tool,
        arguments = [out.path],
        mnemonic = "KilnRunTool",
    )
    return [DefaultInfo(files = depset([out]))]

run_tool = rule(
    implementation = _run_tool_impl,
    attrs = {"tool": attr.label(executable = True, cfg = "exec")},
)

def _count_header_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".h")
    ctx.actions.run_shell(
        outputs = [out],
        inputs = [ctx.file.tree],
        arguments = [ctx.file.tree.path, out.path],
        command = """printf '#define KILN_TREE_FILES %d\\n' "$(find -L "$1" -type f | wc -l)" > "$2" """,
        mnemonic = "KilnCountHeader",
    )
    return [DefaultInfo(files = depset([out]))]

count_header = rule(
    implementation = _count_header_impl,
    attrs = {"tree": attr.label(allow_single_file = True)},
)
