// Compiled against a header a run_shell action (no PATH) generated from a
// tree artifact: a.txt, b.txt, path.txt and tool.
#include "rules/tree_count.h"

int main() { return KILN_TREE_FILES == 4 ? 0 : 1; }
