def _shell_line_impl(ctx):
    ctx.actions.run_shell(
        inputs = [ctx.file.src],
        outputs = [ctx.outputs.out],
        command = "wc -c < \"$1\" > \"$2\"; rev < \"$1\" >> \"$2\"",
        arguments = [ctx.file.src.path, ctx.outputs.out.path],
    )

shell_line = rule(
    implementation = _shell_line_impl,
    attrs = {
        "src": attr.label(allow_single_file = True),
        "out": attr.output(),
    },
)

def _tree_of_impl(ctx):
    tree = ctx.actions.declare_directory(ctx.label.name)
    ctx.actions.run_shell(
        outputs = [tree],
        command = "mkdir -p \"$1/sub\"; for i in $(seq 1 $2); do echo \"file $i\" > \"$1/f$i.txt\"; done; " +
                  "echo nested > \"$1/sub/n.txt\"",
        arguments = [tree.path, str(ctx.attr.count)],
    )
    return [DefaultInfo(files = depset([tree]))]

tree_of = rule(
    implementation = _tree_of_impl,
    attrs = {"count": attr.int()},
)
