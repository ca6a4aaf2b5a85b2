"""The registry: every entry complete, every module of a framework's folder what base.py declares,
facts readable without the framework, and no framework's private names used outside its folder."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from _require import require

import normcheck
from normcheck import frameworks as registry
from normcheck.frameworks import CLASS, CONVENTIONS, FORMS, FRAMEWORKS, FUNCTION, REGISTRY, STYLE
from normcheck.frameworks.base import (
    AdapterModule,
    BenchModule,
    FactsModule,
    FormsModule,
    Framework,
    Implementation,
    KnownIssue,
)
from normcheck.names import ALL_OP_NAMES, DTYPE_NAMES, KIND_NAMES, OP_NAMES
from normcheck.verify.memory_format import MEMORY_FORMAT

ROOT = Path(normcheck.__file__).resolve().parents[1]
PACKAGE = ROOT / "normcheck"
FOLDERS = PACKAGE / "frameworks"
NAMES = list(REGISTRY)
# the stress profile's memory_format row (normcheck.verify.memory_format) is a check a defect may name too
CHECKS = ("forward", "grad_input", "grad_weight", "grad_bias", "running_mean", "running_var", MEMORY_FORMAT)
LAYOUTS = ("contiguous", "channels_last")
DEVICES = ("cpu", "cuda")


def members(protocol: type) -> set[str]:
    """What a module must provide to satisfy ``protocol``: its annotated attributes and methods."""
    methods = {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}
    return methods | set(getattr(protocol, "__annotations__", {}))


def installed_or_skip(name: str) -> None:
    if not registry.is_installed(name):
        require(name)  # skips (or fails where the framework is required)


def test_the_protocols_declare_what_their_users_call():
    assert members(BenchModule) == {
        "MODES",
        "implementations",
        "device_problem",
        "layout",
        "build",
        "set_threads",
        "classify",
    }
    assert members(FormsModule) == {"build"}
    assert members(AdapterModule) == {"framework"}
    assert members(FactsModule) == {"CONVENTIONS", "KNOWN_ISSUES"}


@pytest.mark.parametrize("name", NAMES)
def test_an_entry_names_the_modules_of_its_own_folder(name):
    entry = REGISTRY[name]
    assert entry.name == name
    assert (FOLDERS / name).is_dir()
    modules = {"adapter": entry.adapter, "forms": entry.forms_module, "bench": entry.bench, "facts": entry.facts}
    for part, module in modules.items():
        if module is not None:
            assert module == f"normcheck.frameworks.{name}.{part}"
            assert (FOLDERS / name / f"{part}.py").is_file(), module
    assert entry.probe, "an entry needs an import probe"
    assert (entry.extra is None) == (name == "numpy")  # only NumPy is a core dependency
    assert entry.distributions
    assert bool(entry.forms) == (entry.forms_module is not None)


@pytest.mark.parametrize("name", NAMES)
def test_a_folders_package_imports_nothing(name):
    tree = ast.parse((FOLDERS / name / "__init__.py").read_text())
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr), "a docstring only"
    assert isinstance(tree.body[0].value, ast.Constant) and isinstance(tree.body[0].value.value, str)


def test_the_views_of_the_registry():
    assert list(FRAMEWORKS) == [n for n, e in REGISTRY.items() if e.adapter is not None]
    assert {f.id: f for e in REGISTRY.values() for f in e.forms} == FORMS
    from normcheck.user import FORMS as USER_FORMS

    assert USER_FORMS is FORMS
    assert set(registry.installed()) <= set(FRAMEWORKS)


@pytest.mark.parametrize("form", list(FORMS.values()), ids=list(FORMS))
def test_a_forms_record_is_complete(form):
    entry = REGISTRY[form.framework]
    assert form in entry.forms
    assert form.conventions_of in CONVENTIONS
    assert form.kind in (FUNCTION, CLASS, STYLE)
    assert bool(form.base and form.base_from) == (form.kind == CLASS)
    assert form.title


@pytest.mark.parametrize("name", NAMES)
def test_the_facts_module(name):
    facts = registry.facts_module(name)
    assert members(FactsModule) <= set(vars(facts))
    for conventions, by_op in facts.CONVENTIONS.items():
        assert CONVENTIONS[conventions] == by_op
        assert set(by_op) <= set(OP_NAMES)
        assert all(c.op == op and c.framework == conventions for op, c in by_op.items())
    if REGISTRY[name].adapter is not None:
        assert set(facts.CONVENTIONS[name]) == set(OP_NAMES), "a framework declares every op"
    assert isinstance(facts.KNOWN_ISSUES, tuple)
    for issue in facts.KNOWN_ISSUES:
        assert isinstance(issue, KnownIssue)
        assert issue.ops and set(issue.ops) <= set(ALL_OP_NAMES), issue.cause
        assert set(issue.devices) <= set(DEVICES), issue.cause
        assert issue.dtypes is None or set(issue.dtypes) <= set(DTYPE_NAMES), issue.cause
        assert issue.kinds is None or set(issue.kinds) <= set(KIND_NAMES), issue.cause
        assert issue.checks is None or set(issue.checks) <= set(CHECKS), issue.cause
        assert issue.layouts is None or set(issue.layouts) <= set(LAYOUTS), issue.cause


def test_every_convention_comes_from_a_facts_module():
    declared = [c for n in NAMES for c in registry.facts_module(n).CONVENTIONS]
    assert list(CONVENTIONS) == declared
    assert [c for c in CONVENTIONS if c not in FRAMEWORKS] == ["cs231n"]


def test_facts_and_packages_import_no_framework():
    """In a fresh process: the registry, CONVENTIONS, every facts module and every folder's package."""
    script = (
        "import importlib, json, sys\n"
        "from normcheck import frameworks as r\n"
        "r.CONVENTIONS\n"
        "for name, e in r.REGISTRY.items():\n"
        "    importlib.import_module(f'normcheck.frameworks.{name}')\n"
        "    importlib.import_module(e.facts)\n"
        "probes = [m for e in r.REGISTRY.values() if e.extra is not None for m in e.probe]\n"
        "print(json.dumps(sorted(m for m in probes if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_the_adapter_module(name):
    installed_or_skip(name)
    module = importlib.import_module(REGISTRY[name].adapter)
    assert members(AdapterModule) <= set(vars(module))
    fw = registry.load(name)
    assert isinstance(fw, Framework) and fw.name == name
    facts = registry.facts_module(name)
    assert fw.conventions == CONVENTIONS[name] and fw.known_issues == facts.KNOWN_ISSUES
    assert fw.facts().known_issues == facts.KNOWN_ISSUES
    names = {impl.name for op in OP_NAMES for impl in fw.implementations(op)}
    for op in OP_NAMES:
        for impl in fw.implementations(op):
            assert isinstance(impl, Implementation)
            assert (impl.framework, impl.op) == (name, op)
    for issue in facts.KNOWN_ISSUES:
        assert issue.impls is None or set(issue.impls) <= names, issue.cause


def test_numpy_has_no_adapter():
    with pytest.raises(ValueError, match="no built-in implementations"):
        registry.load("numpy")


@pytest.mark.parametrize("name", NAMES)
def test_the_bench_module(name):
    installed_or_skip(name)
    bench = registry.bench_module(name)
    assert members(BenchModule) <= set(vars(bench)), members(BenchModule) - set(vars(bench))
    assert set(bench.MODES) == {"eager", "compiled"}
    impls = bench.implementations("ln")
    assert impls and all(isinstance(i, Implementation) and i.framework == name for i in impls)
    assert bench.device_problem("cpu") is None
    assert bench.classify(ValueError("not a framework error")) is None


@pytest.mark.parametrize("name", [n for n, e in REGISTRY.items() if e.forms_module is not None])
def test_the_forms_module(name):
    installed_or_skip(name)
    forms = registry.forms_module(name)
    assert members(FormsModule) <= set(vars(forms))


def _folder_of(module: str) -> str | None:
    """The framework whose folder holds ``module`` (normcheck.frameworks.<name>.*), or None."""
    parts = module.split(".")
    if parts[:2] == ["normcheck", "frameworks"] and len(parts) > 2 and parts[2] in REGISTRY:
        return parts[2]
    return None


def _private(*names: str) -> bool:
    return any(n.startswith("_") and not n.startswith("__") for n in names)


def private_uses(tree: ast.AST, home: str | None, attributes: bool) -> list[str]:
    """How code outside its folder (``home``: the folder the code is in, if any) uses a framework's
    private names: imports of a private name or module, and (``attributes``) private attributes
    read off a name imported from the folder."""
    problems, bound = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported = [(node.module, a.name, a.asname) for a in node.names]
        elif isinstance(node, ast.Import):
            imported = [(a.name, "", a.asname) for a in node.names]
        else:
            continue
        for module, name, asname in imported:
            folder = _folder_of(f"{module}.{name}" if name else module)
            if folder is None or folder == home:
                continue
            if _private(*module.split(".")[3:], name):
                problems.append(f"line {node.lineno} imports {module}{'.' + name if name else ''}")
            bound.add(asname or name)
    if attributes:
        for node in ast.walk(tree):
            name = node.value.id if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) else None
            if name in bound and _private(node.attr):
                problems.append(f"line {node.lineno} reads {name}.{node.attr}")
    return problems


def test_no_private_name_of_a_framework_is_used_outside_its_folder():
    """Outside normcheck/frameworks/<name>/ nothing imports a private name or module from it, and
    no module of the package reads a private attribute off what it imported from it (tests may:
    they reach into what they test, monkeypatching a cache)."""
    problems = []
    for top in ("normcheck", "tests", "benchmarks", "fixtures"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT)
            home = rel.parts[2] if rel.parts[:2] == ("normcheck", "frameworks") and len(rel.parts) > 3 else None
            found = private_uses(ast.parse(path.read_text()), home, attributes=top == "normcheck")
            problems += [f"{rel}: {p}" for p in found]
    assert problems == []


def test_the_scan_finds_private_uses():
    code = (
        "from normcheck.frameworks.torch.adapter import _layer\n"
        "import normcheck.frameworks.jax._x\n"
        "from normcheck.frameworks.onnxruntime import adapter as ort\n"
        "from normcheck.frameworks.torch.adapter import tensor\n"
        "ort._SESSIONS.clear()\n"
        "tensor._private\n"
        "ort.session\n"
    )
    found = private_uses(ast.parse(code), None, attributes=True)
    assert sorted(found) == [
        "line 1 imports normcheck.frameworks.torch.adapter._layer",
        "line 2 imports normcheck.frameworks.jax._x",
        "line 5 reads ort._SESSIONS",
        "line 6 reads tensor._private",
    ]
    assert private_uses(ast.parse(code), "torch", attributes=False) == ["line 2 imports normcheck.frameworks.jax._x"]


# -- reproducers -------------------------------------------------------------------------------


def test_the_repro_protocol_declares_what_the_writer_calls():
    from normcheck.frameworks.base import ReproModule

    assert members(ReproModule) == {"snippet"}


@pytest.mark.parametrize("name", NAMES)
def test_an_entry_names_its_repro_module(name):
    from normcheck.frameworks.base import ReproModule

    module = REGISTRY[name].repro
    assert module == f"normcheck.frameworks.{name}.repro"
    assert (FOLDERS / name / "repro.py").is_file()
    assert members(ReproModule) <= set(vars(registry.repro_module(name)))


def test_repro_modules_import_no_framework():
    """In a fresh process: the parent writes reproducers without any framework."""
    script = (
        "import importlib, json, sys\n"
        "from normcheck import frameworks as r\n"
        "for e in r.REGISTRY.values():\n"
        "    importlib.import_module(e.repro)\n"
        "import normcheck.repro.write\n"
        "probes = [m for e in r.REGISTRY.values() if e.extra is not None for m in e.probe]\n"
        "print(json.dumps(sorted(m for m in probes if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("name", list(FRAMEWORKS))
def test_every_implementation_of_an_adapter_has_a_reproducer(name):
    """The repro module knows each implementation by the name the adapter gives it."""
    from normcheck.ops import OPS
    from normcheck.repro.call import ReproCall, Snippet

    installed_or_skip(name)
    fw = registry.load(name)
    for op in OP_NAMES:
        shape, params = OPS[op].default_cases()[0]
        s = fw.settings(op, "float32")
        for impl in [i for i in fw.implementations(op) if not i.requires]:  # (FP8's: quantized cases only)
            call = ReproCall(
                impl.name, op, shape, params, "float32", "contiguous", "cpu", s.eps, s.momentum, s.framework_momentum
            )
            assert isinstance(registry.repro_module(name).snippet(call), Snippet), (op, impl.name)
    unknown = ReproCall(
        "no such implementation",
        "gn",
        (2, 4),
        OPS["gn"].default_cases()[0][1],
        "float32",
        "contiguous",
        "cpu",
        1e-5,
        0.1,
        None,
    )
    assert "no implementation named" in str(registry.repro_module(name).snippet(unknown))
