"""Finding a SPEC's definition with ast, never importing the user's code."""

from __future__ import annotations

import ast
import sys
import textwrap

import pytest

from normcheck.report.source_location import definition_line, display_path, locate, module_file

SOURCE = textwrap.dedent(
    """\
    import torch
    from .helpers import imported_norm as renamed

    def group_norm(x):  # 4
        return x

    @decorator
    class GroupNorm:  # 8
        eps = 1e-5

        def forward(self, x):  # 11
            return x

    try:
        from fast import layer_norm  # 15
    except ImportError:
        def layer_norm(x):  # 17
            return x

    rms: Callable = make_rms()  # 20
    a, (b, *rest) = 1, (2, 3)  # 21
    annotated_only: int
    def group_norm(x):  # 23: the last binding wins, as when the module runs
        return x
    """
)


@pytest.fixture
def tree() -> ast.Module:
    return ast.parse(SOURCE)


@pytest.mark.parametrize(
    ("attr", "line"),
    [
        ("group_norm", 23),
        ("GroupNorm", 8),  # the class line, not the decorator's
        ("GroupNorm.forward", 11),
        ("GroupNorm.inherited_method", 8),  # not in the body: the class
        ("layer_norm", 17),
        ("rms", 20),
        ("rest", 21),
        ("renamed", 2),
        ("torch", 1),
        ("annotated_only", None),
        ("missing", None),
        ("group_norm.attribute", 23),
    ],
)
def test_definition_line(tree, attr, line):
    assert definition_line(tree, attr) == line


def write(path, text=SOURCE):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_path_spec_relative_to_the_current_directory(tmp_path):
    write(tmp_path / "src" / "layers.py")
    found = locate("src/layers.py:GroupNorm.forward", cwd=tmp_path)
    assert found is not None and found.path == (tmp_path / "src" / "layers.py") and found.line == 11


def test_a_module_spec_is_found_on_the_search_path_without_importing_it(tmp_path):
    marker = tmp_path / "imported"
    write(tmp_path / "lib" / "mypkg" / "__init__.py", f"open({str(marker)!r}, 'w').close()\n")
    write(tmp_path / "lib" / "mypkg" / "norms.py", f"open({str(marker)!r}, 'w').close()\n" + SOURCE)
    found = locate("mypkg.norms:layer_norm", search_path=[str(tmp_path / "lib")], cwd=tmp_path)
    assert found is not None and found.path == tmp_path / "lib" / "mypkg" / "norms.py" and found.line == 18
    assert not marker.exists() and "mypkg" not in sys.modules


def test_a_package_spec_is_its_init_and_the_current_directory_comes_last(tmp_path):
    write(tmp_path / "first" / "norms" / "__init__.py", "def f(): pass\n")
    write(tmp_path / "norms.py", "\n\ndef f(): pass\n")
    found = locate("norms:f", search_path=[str(tmp_path / "first")], cwd=tmp_path)
    assert found is not None and found.path.name == "__init__.py" and found.line == 1
    found = locate("norms:f", search_path=[], cwd=tmp_path)
    assert found is not None and found.path == tmp_path / "norms.py" and found.line == 3


def test_an_empty_search_path_entry_is_the_current_directory(tmp_path):
    write(tmp_path / "norms.py", "def f(): pass\n")
    assert module_file("norms", [""], tmp_path) == tmp_path / "norms.py"


@pytest.mark.parametrize(
    "spec",
    [
        "nowhere/at/all.py:f",  # no file
        "not_a_module_anywhere_xyz:f",
        "bad spec",  # malformed
        "broken.py:f",  # a syntax error
        "fifo.py:f",  # not a regular file: never opened
        "folder.py:f",
    ],
)
def test_what_cannot_be_found_or_read_is_none(tmp_path, spec):
    import os

    write(tmp_path / "broken.py", "def f(:\n")
    os.mkfifo(tmp_path / "fifo.py")
    (tmp_path / "folder.py").mkdir()
    assert locate(spec, search_path=[], cwd=tmp_path) is None


def test_a_file_without_the_name_is_found_without_a_line(tmp_path):
    write(tmp_path / "a.py", "x = 1\n")
    found = locate("a.py:missing", cwd=tmp_path)
    assert found is not None and found.line is None


def test_a_coding_cookie_is_honoured(tmp_path):
    (tmp_path / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\nname = '\xe9'\ndef f(): pass\n")
    found = locate("latin.py:f", cwd=tmp_path)
    assert found is not None and found.line == 3


def test_display_path_prefers_the_workspace_then_the_current_directory(tmp_path):
    path = write(tmp_path / "repo" / "sub" / "a.py")
    assert display_path(path, str(tmp_path / "repo"), tmp_path / "repo" / "sub") == "sub/a.py"
    assert display_path(path, None, tmp_path / "repo" / "sub") == "a.py"
    assert display_path(path, "/elsewhere", tmp_path / "other") == str(path.resolve())


def test_display_path_sees_through_symlinks(tmp_path):
    real = write(tmp_path / "real" / "a.py")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert display_path(tmp_path / "link" / "a.py", str(tmp_path), tmp_path) == "real/a.py"
    assert real.exists()
