"""How a reproducer loads the user's code: by the path or module normcheck was given, written
relative to the reproducer's folder inside the project, and never by something it cannot import."""

from __future__ import annotations

import sys

from normcheck.repro.user_code import Location, loader, locate


def module_function(x):
    return x


def test_a_spec_is_located_as_given():
    assert locate("pkg/layers.py:Norm.forward") == Location(True, "pkg/layers.py", "Norm.forward")
    assert locate("pkg.layers:Norm") == Location(False, "pkg.layers", "Norm")


def test_an_object_is_located_by_its_source_file():
    assert locate(module_function) == Location(True, __file__, "module_function")


def test_an_object_no_script_can_import_gets_a_reason():
    def nested(x):
        return x

    assert "not defined at the top level" in str(locate(nested))
    assert "not defined at the top level" in str(locate(lambda x: x))
    main = type("Main", (), {"__module__": "__main__"})
    assert "__main__" in str(locate(main))
    assert "has no source file" in str(locate(len))


def test_paths_inside_the_project_are_relative_to_the_reproducers(tmp_path):
    project = tmp_path / "project"
    imports, code = loader("src/norms.py:group_norm", None, project / "out" / "repro", project)
    assert imports == ("import importlib", "import importlib.util")
    assert "IMPL = load_file('../../src/norms.py', 'group_norm')" in code
    assert "def load_file(" in code and "def load_module(" not in code


def test_paths_outside_the_project_are_absolute(tmp_path):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    _, code = loader("norms.py:group_norm", None, elsewhere, project)
    assert f"IMPL = load_file({str(project / 'norms.py')!r}, 'group_norm')" in code


def test_a_module_is_imported_with_the_project_on_the_path_and_a_backward_too(tmp_path):
    project = tmp_path / "project"
    _, code = loader("mypkg.layers:forward", "mypkg/layers.py:backward", project / "repro", project)
    assert "IMPL = load_module('..', 'mypkg.layers', 'forward')" in code
    assert "BACKWARD = load_file('../mypkg/layers.py', 'backward')" in code


def test_an_unimportable_implementation_is_a_reason_not_a_script(tmp_path):
    assert "not defined at the top level" in str(loader(lambda x: x, None, tmp_path, tmp_path))


def test_the_loading_code_imports_a_file_of_a_package_and_a_module(tmp_path, monkeypatch):
    package = tmp_path / "project" / "repro_pkg_under_test"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("VALUE = 42\n")
    (package / "mod.py").write_text("from .helper import VALUE\n\n\ndef f():\n    return VALUE\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    repro = tmp_path / "project" / "repro"
    for impl, backward in (
        ("repro_pkg_under_test/mod.py:f", None),
        ("repro_pkg_under_test.mod:f", "repro_pkg_under_test/mod.py:f"),
    ):
        imports, code = loader(impl, backward, repro, tmp_path / "project")
        namespace = {"__file__": str(repro / "script.py")}
        exec("\n".join(["import sys", "from pathlib import Path", *imports, code]), namespace)
        assert namespace["IMPL"]() == 42
        if backward:
            assert namespace["BACKWARD"] is namespace["IMPL"]
