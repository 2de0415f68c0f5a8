"""BUILD matches the checkout: one target per module, test and export script, with the deps
that the files' imports need. Plain Python (no TensorFlow), well under a second.

Everything expected is derived from the files on disk (the imports are read with `ast`), so
after a module is added, moved or split each failure says which BUILD entry to add or fix.
BUILD is read with `ast` too: it must be a list of plain rule calls with literal arguments
(no glob(), no tables, no comprehensions, no conditions).
"""

import ast
import functools
import os
import pathlib
import re
import sys

import pytest

# The checkout. Under Bazel this file is a symlink in the runfiles tree, which only holds
# what BUILD lists, so follow it back to the source tree (the target is tagged "external":
# never cached, as its real inputs are the whole checkout).
ROOT = pathlib.Path(os.path.realpath(__file__)).parents[2]
PACKAGE = "keras_spela"
# The device package (no TensorFlow; `pip install ./export`): its modules follow the same
# rules, with targets named keras_spela_device, keras_spela_device_<path below it> and
# `imports = ["export"]` (Bazel then finds `keras_spela_device` in export/).
DEVICE_PACKAGE = "keras_spela_device"
DEVICE_ROOT = "export"
PACKAGE_ROOTS = {PACKAGE: ".", DEVICE_PACKAGE: DEVICE_ROOT}
RULES = ("py_library", "py_test", "py_binary", "filegroup")
# Files pytest reads besides the test files; the :pytest_support filegroup lists those that exist.
PYTEST_SUPPORT_FILES = (
    "conftest.py",
    "pytest.ini",
    "pyproject.toml",
    "setup.cfg",
    "tox.ini",
    "tests/conftest.py",
)
STATEMENTS = {
    "Assign": "an assignment (a table or a variable)",
    "AugAssign": "an assignment",
    "Expr": "an expression that is not a rule call (a comprehension?)",
    "If": "a condition",
    "For": "a loop",
    "FunctionDef": "a function",
}
TEST_SIZES = ("small", "medium", "large")
# Must not be imported by the device package and export/device_trainer.py (they run on
# devices without them).
DEVICE_FORBIDDEN = ("tensorflow", "keras", PACKAGE)


# ------------------------------------------------------------------------- reading BUILD
class Target:
    def __init__(self, kind, attrs, line):
        self.kind = kind
        self.attrs = attrs
        self.line = line
        self.name = attrs.get("name")

    def get(self, attr):
        value = self.attrs.get(attr, [])
        return [value] if isinstance(value, str) else list(value)

    def labels(self, attr):
        """The names of the same-package targets in a label list (":x" and "//:x")."""
        return {label_name(v) for v in self.get(attr) if is_target_label(v)}

    def __str__(self):
        return ":%s (BUILD:%d)" % (self.name, self.line)


def is_target_label(value):
    return value.startswith(":") or value.startswith("//:")


def label_name(value):
    return value.split(":", 1)[1] if is_target_label(value) else value


@functools.lru_cache(maxsize=None)
def read_build():
    """(targets by name, problems): BUILD's rule calls and everything that is not one."""
    path = ROOT / "BUILD"
    assert path.is_file(), "no BUILD at %s (is %s the checkout?)" % (path, ROOT)
    tree = ast.parse(path.read_text(), filename="BUILD")
    targets, problems = {}, []
    for node in tree.body:
        call = node.value if isinstance(node, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
            what = STATEMENTS.get(type(node).__name__, "a statement")
            problems.append(
                "BUILD:%d: %s; BUILD may only contain rule calls (%s) written out with literal "
                "arguments: no tables, glob(), comprehensions or conditions"
                % (node.lineno, what, ", ".join(RULES))
            )
            continue
        kind = call.func.id
        if kind == "load":
            continue
        if kind not in RULES:
            problems.append(
                "BUILD:%d: %s() is not one of %s" % (node.lineno, kind, ", ".join(RULES))
            )
            continue
        if call.args:
            problems.append("BUILD:%d: %s() with positional arguments" % (node.lineno, kind))
        attrs = {}
        for keyword in call.keywords:
            try:
                attrs[keyword.arg] = ast.literal_eval(keyword.value)
            except ValueError:
                problems.append(
                    "BUILD:%d: %s(%s = ...) is not a literal; write the list out (no glob(), "
                    "no variables, no comprehensions or conditions)"
                    % (keyword.value.lineno, kind, keyword.arg)
                )
        name = attrs.get("name")
        if not isinstance(name, str):
            problems.append("BUILD:%d: %s() without a literal name" % (node.lineno, kind))
        elif name in targets:
            problems.append(
                "BUILD:%d: a second target named %r (the first is at BUILD:%d); keep one"
                % (node.lineno, name, targets[name].line)
            )
        else:
            targets[name] = Target(kind, attrs, node.lineno)
    return targets, problems


def targets_of(kind):
    return [t for t in read_build()[0].values() if t.kind == kind]


# ------------------------------------------------------------------------- the checkout
def relative(path):
    return path.relative_to(ROOT).as_posix()


def source_files(directory, pattern):
    return sorted(
        p for p in (ROOT / directory).rglob(pattern) if "__pycache__" not in p.parts and p.is_file()
    )


@functools.lru_cache(maxsize=None)
def package_modules():
    """Dotted module name -> file of every module of the packages (a package is its
    __init__)."""
    modules = {}
    for package, root in PACKAGE_ROOTS.items():
        for path in source_files(os.path.join(root, package), "*.py"):
            parts = list(path.relative_to(ROOT / root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = relative(path)
    return modules


def target_name(module):
    """keras_spela -> keras_spela, keras_spela.core.rules -> rules, keras_spela.lite.x -> lite_x;
    keras_spela_device.x.y -> keras_spela_device_x_y."""
    parts = module.split(".")
    if parts[0] == DEVICE_PACKAGE:
        return "_".join(parts)
    return "_".join(parts[1:]) if parts[1:] else PACKAGE


def module_of_file(path):
    return next(m for m, f in package_modules().items() if f == path)


def is_package_name(name):
    return any(name == p or name.startswith(p + ".") for p in PACKAGE_ROOTS)


def is_device_module(module):
    return module.split(".")[0] == DEVICE_PACKAGE


@functools.lru_cache(maxsize=None)
def parse(path):
    return ast.parse((ROOT / path).read_text(), filename=path)


def imported_names(path):
    """(top-level name, line) of every module that `path` imports (also inside functions)."""
    names = []
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            names += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.module.split(".")[0], node.lineno))
    return names


def package_imports(path):
    """(deps, problems): target name -> the first import in `path` that needs it."""
    modules = package_modules()
    module = module_of_file(path) if path in modules.values() else None
    deps, problems = {}, []

    def need(name, node, what):
        if name in modules:
            deps.setdefault(target_name(name), "%s:%d: %s" % (path, node.lineno, what))
        else:
            file = name.replace(".", "/")
            problems.append(
                "%s:%d: %s: %s is no module of the package (no %s.py nor %s/__init__.py)"
                % (path, node.lineno, what, name, file, file)
            )

    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_package_name(alias.name):
                    need(alias.name, node, "import " + alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if module is None:
                    problems.append(
                        "%s:%d: a relative import outside the package" % (path, node.lineno)
                    )
                    continue
                package = module.split(".")
                if not path.endswith("/__init__.py"):
                    package.pop()
                if node.level - 1 >= len(package):
                    problems.append(
                        "%s:%d: a relative import above the package" % (path, node.lineno)
                    )
                    continue
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            if not is_package_name(base):
                continue
            for alias in node.names:
                what = "from %s import %s" % ("." * node.level + (node.module or ""), alias.name)
                submodule = base + "." + alias.name
                need(submodule if submodule in modules else base, node, what)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # "package.module:attribute" names a module loaded by name (a registry).
            loaded = re.fullmatch(r"([\w.]+):\w+", node.value)
            if loaded and is_package_name(loaded.group(1)):
                need(loaded.group(1), node, repr(node.value))
    if module is not None:
        deps.pop(target_name(module), None)  # `from . import x` of a name of the package itself
    return deps, problems


def export_scripts():
    return [relative(p) for p in sorted((ROOT / "export").glob("*.py"))]


def stem(path):
    return pathlib.PurePosixPath(path).stem


def used_export_scripts(path):
    """The export scripts that a test imports (`from device_trainer import ...`, with export/
    on sys.path) or names as a path component (`REPO / "export" / "device_trainer.py"`, to
    run it or import it in a subprocess)."""
    stems = {stem(s) for s in export_scripts()}
    used = {name for name, _ in imported_names(path) if name in stems}
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            used.update(s for s in stems if node.value == s + ".py")
    return used


# ------------------------------------------------------------------------- messages
def block(kind, name, srcs, deps=(), data=(), main=None, size=None):
    lines = ["%s(" % kind, '    name = "%s",' % name]
    if size:
        lines.append('    size = "%s",  # or "large" (see --test_timeout in .bazelrc)' % size)
    lines.append('    srcs = ["%s"],' % srcs)
    if data:
        lines.append("    data = [%s]," % ", ".join('":%s"' % d for d in sorted(data)))
    if main:
        lines.append('    main = "%s",' % main)
    if deps:
        lines.append("    deps = [%s]," % ", ".join('":%s"' % d for d in sorted(deps)))
    lines.append(")")
    return "\n        ".join([""] + lines)


def deps_problem(target, path, expected, attr="deps"):
    actual = target.labels(attr)
    if actual == set(expected):
        return None
    add = ["  add :%s  (%s)" % (d, expected[d]) for d in sorted(set(expected) - actual)]
    remove = [
        "  remove :%s  (%s imports nothing that needs it)" % (d, path)
        for d in sorted(actual - set(expected))
    ]
    return "%s: %s should be [%s] (what %s imports):\n    %s" % (
        target,
        attr,
        ", ".join('":%s"' % d for d in sorted(expected)),
        path,
        "\n    ".join(add + remove),
    )


def srcs_and_main_problem(target, path):
    problems = []
    if target.get("srcs") != [path]:
        problems.append('srcs should be ["%s"] (it is %s)' % (path, target.get("srcs")))
    if target.attrs.get("main") != path:
        problems.append('main should be "%s"' % path)
    return "%s: %s" % (target, "; ".join(problems)) if problems else None


def check(problems):
    problems = [p for p in problems if p]
    if problems:
        pytest.fail(
            "BUILD does not match the checkout; change BUILD:\n\n" + "\n\n".join(problems),
            pytrace=False,
        )


# ------------------------------------------------------------------------- tests
def test_build_is_plain_rule_calls():
    targets, problems = read_build()
    for target in targets.values():
        for attr in ("srcs", "data", "deps"):
            for label in target.get(attr):
                if is_target_label(label) and label_name(label) not in targets:
                    problems.append(
                        "%s: %s names :%s, which BUILD does not define"
                        % (target, attr, label_name(label))
                    )
    check(problems)


def test_listed_files_exist():
    problems = []
    for target in read_build()[0].values():
        for attr in ("srcs", "data", "main"):
            for path in target.get(attr):
                if not is_target_label(path) and not (ROOT / path).is_file():
                    problems.append(
                        "%s: %s lists %s, which does not exist: remove it, or the target if its "
                        "file is gone" % (target, attr, path)
                    )
    check(problems)


def test_one_py_library_per_module():
    targets = read_build()[0]
    problems = []
    expected_names = {}
    for module, path in package_modules().items():
        name = target_name(module)
        if name in expected_names:
            problems.append(
                "%s and %s would both be :%s; rename one of the files"
                % (expected_names[name], path, name)
            )
            continue
        expected_names[name] = path
        holders = [t for t in targets_of("py_library") if path in t.get("srcs")]
        target = targets.get(name)
        if target is None:
            deps = package_imports(path)[0]
            if holders:
                problems.append(
                    "%s is in the srcs of %s; the target of %s is :%s: rename it"
                    % (path, ", ".join(map(str, holders)), path, name)
                )
            else:
                new = block("py_library", name, path, deps=deps)
                if is_device_module(module):
                    new = new.replace(
                        "srcs =", 'imports = ["%s"],\n            srcs =' % DEVICE_ROOT
                    )
                problems.append("%s has no py_library; add%s" % (path, new))
            continue
        if target.kind != "py_library":
            problems.append(
                "%s is a %s; :%s must be the py_library of %s" % (target, target.kind, name, path)
            )
        elif is_device_module(module) and target.get("imports") != [DEVICE_ROOT]:
            problems.append(
                '%s: add imports = ["%s"] (%s is found there)'
                % (target, DEVICE_ROOT, DEVICE_PACKAGE)
            )
        elif target.get("srcs") != [path]:
            problems.append(
                '%s: srcs should be ["%s"] (it is %s)' % (target, path, target.get("srcs"))
            )
        for other in holders:
            if other.name != name:
                problems.append(
                    "%s: remove %s from its srcs (it belongs to :%s)" % (other, path, name)
                )
    for target in targets_of("py_library"):
        if target.name not in expected_names:
            problems.append(
                "%s is no module's target (srcs %s); the modules' targets are named after "
                "their path (keras_spela/lite/x.py -> :lite_x, export/keras_spela_device/x.py "
                "-> :keras_spela_device_x): rename or remove it" % (target, target.get("srcs"))
            )
    check(problems)


def test_library_deps_are_the_modules_it_imports():
    targets = read_build()[0]
    problems = []
    for module, path in package_modules().items():
        deps, import_problems = package_imports(path)
        problems += import_problems
        target = targets.get(target_name(module))
        if target is not None and target.kind == "py_library":
            problems.append(deps_problem(target, path, deps))
    check(problems)


def test_package_data_belongs_to_a_library():
    data = {path for t in targets_of("py_library") for path in t.get("data")}
    problems = [
        "%s is in no py_library's data; add it to the data of the module that reads it"
        % relative(p)
        for p in source_files(PACKAGE, "*")
        if p.suffix not in (".py", ".pyc")
        and not p.name.startswith(".")
        and p.name not in ("BUILD", "BUILD.bazel")
        and relative(p) not in data
    ]
    check(problems)


def test_one_py_test_per_test_file():
    targets = read_build()[0]
    problems = []
    test_files = [relative(p) for p in sorted((ROOT / "tests").rglob("*_test.py"))]
    for path in test_files:
        name = stem(path)
        deps, import_problems = package_imports(path)
        problems += import_problems
        data = {"pytest_support"} | used_export_scripts(path)
        target = targets.get(name)
        if target is None:
            new = block("py_test", name, path, deps=deps, data=data, main=path, size="medium")
            problems.append("%s has no py_test; add%s" % (path, new))
            continue
        if target.kind != "py_test":
            problems.append(
                "%s is a %s; :%s must be the py_test of %s" % (target, target.kind, name, path)
            )
            continue
        problems.append(srcs_and_main_problem(target, path))
        if target.attrs.get("size") not in TEST_SIZES:
            problems.append("%s: size should be one of %s" % (target, ", ".join(TEST_SIZES)))
        problems.append(deps_problem(target, path, deps))
        missing = data - target.labels("data")
        for label in sorted(missing):
            why = (
                "the pytest configuration"
                if label == "pytest_support"
                else "%s uses export/%s.py" % (path, label)
            )
            problems.append('%s: add ":%s" to data (%s)' % (target, label, why))
        unused = {stem(s) for s in export_scripts()} & (target.labels("data") - data)
        for script in sorted(unused):
            problems.append(
                "%s: remove :%s from data (%s does not use export/%s.py)"
                % (target, script, path, script)
            )
    for target in targets_of("py_test"):
        if target.get("srcs") and target.get("srcs")[0] not in test_files:
            problems.append(
                "%s: %s is no tests/**/*_test.py file: remove the target or fix srcs"
                % (target, target.get("srcs"))
            )
    check(problems)


def test_test_file_names_are_unique():
    """A py_test is named by its file's stem, and pytest imports a test file of a directory
    without __init__.py by its base name: two tests/**/<name>_test.py files clash."""
    by_stem = {}
    for path in sorted((ROOT / "tests").rglob("*_test.py")):
        by_stem.setdefault(path.stem, []).append(relative(path))
    check(
        [
            "%s share the name %s: rename all but one" % (" and ".join(paths), name)
            for name, paths in sorted(by_stem.items())
            if len(paths) > 1
        ]
    )


def test_one_py_binary_per_export_script():
    targets = read_build()[0]
    problems = []
    scripts = export_scripts()
    for path in scripts:
        name = stem(path)
        deps, import_problems = package_imports(path)
        problems += import_problems
        # Sibling export scripts it imports (export/ is on sys.path there).
        for sibling in sorted(used_export_scripts(path) - {name}):
            deps.setdefault(sibling, "%s imports %s" % (path, sibling))
        target = targets.get(name)
        if target is None or target.kind != "py_binary":
            new = block("py_binary", name, path, deps=deps, main=path)
            problems.append("%s has no py_binary :%s; add%s" % (path, name, new))
            continue
        problems.append(srcs_and_main_problem(target, path))
        problems.append(deps_problem(target, path, deps))
    for target in targets_of("py_binary"):
        if target.get("srcs") and target.get("srcs")[0] not in scripts:
            problems.append(
                "%s: %s is no export/*.py script: remove the target or fix srcs"
                % (target, target.get("srcs"))
            )
    check(problems)


def test_device_trainer_needs_no_tensorflow():
    path = "export/device_trainer.py"
    assert (ROOT / path).is_file(), "%s is gone; update this test" % path
    device_files = [path] + [f for m, f in package_modules().items() if is_device_module(m)]
    problems = [
        "%s:%d imports %s; the device side must run without TensorFlow, Keras and "
        "keras_spela (NumPy and a TFLite runtime only)" % (source, line, name)
        for source in device_files
        for name, line in imported_names(source)
        if name in DEVICE_FORBIDDEN
    ]
    # They depend on the device package only.
    targets = read_build()[0]
    device_targets = {target_name(m) for m in package_modules() if is_device_module(m)}
    for name in ["device_trainer"] + sorted(device_targets):
        target = targets.get(name)
        for label in sorted(target.labels("deps") if target is not None else ()):
            if label not in device_targets:
                problems.append(
                    "%s: remove :%s (it may depend on the device package only)" % (target, label)
                )
    check(problems)


def test_pytest_support_lists_the_pytest_configuration():
    target = read_build()[0].get("pytest_support")
    existing = [path for path in PYTEST_SUPPORT_FILES if (ROOT / path).is_file()]
    if target is None:
        check(['no :pytest_support; add filegroup(name = "pytest_support", srcs = %s)' % existing])
    srcs = target.get("srcs")
    add = ["%s: add %s to srcs (pytest reads it)" % (target, p) for p in existing if p not in srcs]
    stale = [p for p in srcs if p not in existing]
    check(add + ["%s: remove %s from srcs (no such file)" % (target, p) for p in stale])


def test_no_build_file_below_the_root():
    bazelignore = ROOT / ".bazelignore"
    ignored = {
        line.strip().rstrip("/")
        for line in (bazelignore.read_text().splitlines() if bazelignore.is_file() else [])
        if line.strip() and not line.startswith("#")
    }
    problems = []
    for directory, subdirs, files in os.walk(ROOT):
        here = pathlib.Path(directory)
        subdirs[:] = [
            d
            for d in subdirs
            if not d.startswith((".", "bazel-"))
            and d != "__pycache__"
            and relative(here / d) not in ignored
        ]
        if here != ROOT:
            problems += [
                "%s makes %s a Bazel package, hiding its files from BUILD: remove it"
                % (relative(here / f), relative(here))
                for f in files
                if f in ("BUILD", "BUILD.bazel")
            ]
    check(problems)


def test_bazel_ci_files_are_the_ci_targets_and_a_few():
    """tools/run_tests.sh runs these files under Bazel and every other one with pytest:
    the list must be the "ci" targets' files, and a few quick ones (each needs its own
    process under Bazel)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import bazel_ci_tests
    finally:
        sys.path.remove(str(ROOT / "tools"))
    listed = bazel_ci_tests.ci_test_files(ROOT / "BUILD")
    expected = [f for t in targets_of("py_test") if "ci" in t.get("tags") for f in t.get("srcs")]
    assert listed == expected
    assert 1 <= len(listed) <= 10, listed
    assert all((ROOT / f).is_file() and f.endswith("_test.py") for f in listed), listed


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
