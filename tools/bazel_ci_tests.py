"""Prints the test file of every py_test tagged "ci" in BUILD, one per line.

tools/run_tests.sh runs these files under Bazel and every other test file with pytest,
so that each test runs once. BUILD holds only rule calls with literal arguments
(tests/repo/build_test.py checks it), which `ast` reads without Bazel.

    python tools/bazel_ci_tests.py [BUILD]
"""

import ast
import pathlib
import sys

CI_TAG = "ci"


def ci_test_files(build_path):
    """The `srcs` of the py_test targets tagged "ci" in `build_path`, in BUILD's order."""
    tree = ast.parse(pathlib.Path(build_path).read_text(), filename=str(build_path))
    files = []
    for node in tree.body:
        call = node.value if isinstance(node, ast.Expr) else None
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "py_test"):
            continue
        attrs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        if CI_TAG in attrs.get("tags", []):
            files.extend(attrs["srcs"])
    return files


def main(argv):
    build = argv[1] if len(argv) > 1 else pathlib.Path(__file__).resolve().parents[1] / "BUILD"
    print("\n".join(ci_test_files(build)))


if __name__ == "__main__":
    main(sys.argv)
