"""The config file: every mistake is one UsageError naming the file; every value, 0 too, is kept."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from normcheck.errors import UsageError
from normcheck.verify.config import INT, INT_LIST, KEYS, NUM, RANGES, STR, STR_LIST, find_config, load_config
from normcheck.verify.request import Request


def config(tmp_path: Path, body: str, name: str = "normcheck.toml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def refused(path: Path) -> str:
    with pytest.raises(UsageError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    return message


def test_a_file_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "normcheck.toml"
    path.write_bytes(b'[[check]]\nop = "gn"\nname = "caf\xe9"\n')
    assert "not UTF-8 text (byte 0xe9 at offset 31)" in refused(path)


def test_a_pyproject_that_is_not_utf8_is_a_usage_error_when_searched(tmp_path):
    (tmp_path / "pyproject.toml").write_bytes(b"[project]\nname = '\xff'\n")
    with pytest.raises(UsageError, match=r"pyproject\.toml: not UTF-8 text"):
        find_config(tmp_path)


@pytest.mark.parametrize(
    "body, name",
    [
        ("[[check]]\n", "normcheck.toml"),
        ('[[check]]\nname = "everything"\nrtol = 1e-3\natol = 1e-3\n', "normcheck.toml"),
        ("[[check]]\nop = []\n", "normcheck.toml"),
        ('[[check]]\nop = ""\n', "normcheck.toml"),
        ("[tool.normcheck]\n[[tool.normcheck.check]]\n", "pyproject.toml"),
    ],
)
def test_a_check_that_selects_nothing_is_refused(tmp_path, body, name):
    message = refused(config(tmp_path, body, name))
    assert message.endswith("check 1 selects nothing; give at least op or impl")


def test_the_empty_check_is_named_by_its_number(tmp_path):
    message = refused(config(tmp_path, '[[check]]\nop = "gn"\n[[check]]\n'))
    assert "check 2 selects nothing" in message


def test_a_default_op_above_the_checks_selects_for_them(tmp_path):
    [request] = load_config(config(tmp_path, 'op = "gn"\n[[check]]\nname = "all gn"\n'))
    assert request.ops == "gn"


def test_zero_is_a_value_not_an_absence(tmp_path):
    body = (
        'momentum = 0\nseed = 0\n[[check]]\nop = "bn"\nrtol = 0\natol = 0\n'
        '[[check]]\nop = "bn"\nrtol = 0.0\natol = 0.0\n'
    )
    for request in load_config(config(tmp_path, body)):
        assert request.momentum == 0 and request.momentum is not None
        assert request.rtol == 0 and request.rtol is not None
        assert request.atol == 0 and request.atol is not None
        assert request.seed == 0


def test_a_check_overrides_a_default_with_zero(tmp_path):
    [request] = load_config(config(tmp_path, 'momentum = 0.1\n[[check]]\nop = "bn"\nmomentum = 0\n'))
    assert request.momentum == 0


EPS_RANGE = "must be positive, at least the smallest normal float64 (2.23e-308), and below 1"


@pytest.mark.parametrize(
    "body, reason, value",
    [
        ('[[check]]\nop = "bn"\neps = 0\n', f"[check][1].eps: {EPS_RANGE}", "0"),
        ('eps = -1e-5\n[[check]]\nop = "bn"\n', f"eps: {EPS_RANGE}", "-1e-05"),
        ('[[check]]\nop = "bn"\neps = 1e-320\n', f"[check][1].eps: {EPS_RANGE}", "1e-320"),
        ('[[check]]\nop = "bn"\neps = 1\n', f"[check][1].eps: {EPS_RANGE}", "1"),
        ('[[check]]\nop = "bn"\nmomentum = 1.5\n', "momentum: must be in [0, 1]", "1.5"),
        ('[[check]]\nop = "bn"\nrtol = -1\natol = 0\n', "rtol: must be at least 0 and below 1", "-1"),
        ('[[check]]\nop = "bn"\nrtol = 1.0\natol = 0\n', "rtol: must be at least 0 and below 1", "1.0"),
        ('[[check]]\nop = "bn"\nrtol = nan\natol = 0\n', "rtol: must be a finite number", "nan"),
        ('[[check]]\nop = "bn"\natol = inf\nrtol = 0\n', "atol: must be a finite number", "inf"),
        ('[[check]]\nop = "bn"\natol = -1\nrtol = 0\n', "atol: must be at least 0", "-1"),
        ('[[check]]\nop = "bn"\ntimeout = 0\n', "timeout: must be positive", "0"),
        ('[[check]]\nop = "gn"\ngroups = [2, 0]\n', "groups: must be positive", "[2, 0]"),
        ('[[check]]\nop = "ln"\nnormalized_ndim = 0\n', "normalized_ndim: must be positive", "0"),
    ],
)
def test_values_out_of_range_name_the_file_and_key(tmp_path, body, reason, value):
    path = config(tmp_path, body)
    message = refused(path)
    assert message.startswith(f"{path}: ") and reason in message
    assert message.endswith(f", got {value}")


def test_a_malformed_shape_string_names_the_file_and_key(tmp_path):
    path = config(tmp_path, '[[check]]\nop = "gn"\nshapes = ["2,x,3"]\n')
    assert refused(path).startswith(f"{path}: [check][1].shapes: malformed shape '2,x,3'")


@pytest.mark.parametrize(
    "body, where, given, missing",
    [
        ('[[check]]\nop = "gn"\nrtol = 1e-3\n', "[check][1]", "rtol", "atol"),
        ('[[check]]\nop = "gn"\n[[check]]\nop = "ln"\natol = 1e-3\n', "[check][2]", "atol", "rtol"),
    ],
)
def test_rtol_without_atol_names_the_file_and_both_keys(tmp_path, body, where, given, missing):
    path = config(tmp_path, body)
    assert refused(path) == (
        f"{path}: {where}: {given} is given without {missing}; give rtol and atol together, or neither"
    )


def test_rtol_above_the_checks_pairs_with_atol_in_each(tmp_path):
    body = 'rtol = 1e-3\n[[check]]\nop = "gn"\natol = 1e-4\n[[check]]\nop = "ln"\n'
    path = config(tmp_path, body)
    assert refused(path) == (
        f"{path}: [check][2]: rtol is given without atol; give rtol and atol together, or neither"
        " (rtol is set in the top level)"
    )
    [request] = load_config(config(tmp_path, 'rtol = 1e-3\n[[check]]\nop = "gn"\natol = 1e-4\n'))
    assert (request.rtol, request.atol) == (1e-3, 1e-4)


def test_in_pyproject_an_unpaired_tolerance_names_the_table(tmp_path):
    body = '[tool.normcheck]\natol = 1e-4\n[[tool.normcheck.check]]\nop = "gn"\n'
    path = config(tmp_path, body, "pyproject.toml")
    assert refused(path) == (
        f"{path}: [tool.normcheck.check][1]: atol is given without rtol; give rtol and atol together, or neither"
        " (atol is set in [tool.normcheck])"
    )


# -- every key, read into the Request ------------------------------------------------------------

SELECTOR = ("impl", "pkg/layers.py:Norm")  # selects, without touching the key under test
# key -> (TOML value, the value the Request gets)
VALID = {
    "name": ('"our group norm"', "our group norm"),
    "op": ('"gn"', "gn"),
    "ops": ('["gn", "ln"]', ["gn", "ln"]),
    "axes": ("[1]", [1]),
    "impl": ('"mypkg/layers.py:MyGroupNorm"', "mypkg/layers.py:MyGroupNorm"),
    "backward": ('"mypkg/cs231n.py:groupnorm_backward"', "mypkg/cs231n.py:groupnorm_backward"),
    "style": ('"cs231n"', "cs231n"),
    "framework": ('"torch"', "torch"),
    "frameworks": ('["torch", "jax"]', ["torch", "jax"]),
    "shapes": ('[[2, 64, 8, 8], "4,32,16,16"]', [[2, 64, 8, 8], "4,32,16,16"]),
    "groups": ("[1, 32]", [1, 32]),
    "normalized_ndim": ("2", 2),
    "dtype": ('"float16"', "float16"),
    "dtypes": ('["float32", "bfloat16"]', ["float32", "bfloat16"]),
    "input": ('"constant"', "constant"),
    "inputs": ('["normal", "large_mean"]', ["normal", "large_mean"]),
    "device": ('"cuda"', "cuda"),
    "seed": ("7", 7),
    "rtol": ("1e-3", 1e-3),
    "atol": ("2", 2),
    "eps": ("1e-3", 1e-3),
    "momentum": ("0.9", 0.9),
    "against": ('"torch"', "torch"),
    "timeout": ("2.5", 2.5),
    "profile": ('"quick"', "quick"),
    "world_size": ("[2, 3]", [2, 3]),
    "variant": ('"gemma"', "gemma"),
    "layout": ('"nhwc"', "nhwc"),
    "param_shape": ('"broadcast"', "broadcast"),
    "policy": ('"llama"', "llama"),
    "quantize": ('"e4m3"', "e4m3"),
    "scale": ('"static"', "static"),
}


def test_the_valid_values_cover_every_key():
    assert set(VALID) == set(KEYS)


# rtol and atol go together: a check giving one gets the other too
PARTNER = {"rtol": ("atol", 0.5), "atol": ("rtol", 0.5)}


def _selector(key: str) -> str:
    line = 'op = "gn"' if key == "impl" else f'{SELECTOR[0]} = "{SELECTOR[1]}"'
    return line + (f"\n{PARTNER[key][0]} = {PARTNER[key][1]}" if key in PARTNER else "")


def _expected(key: str, value, name: str = "check 1") -> Request:
    given = {"ops": "gn"} if key == "impl" else {SELECTOR[0]: SELECTOR[1]}
    given.update([PARTNER[key]] if key in PARTNER else [])
    field = KEYS[key][0]
    return Request(**{"name": name, **given, field: value})


@pytest.mark.parametrize("key", sorted(KEYS))
def test_each_key_in_a_check_is_read_into_its_request_field(tmp_path, key):
    toml, value = VALID[key]
    [request] = load_config(config(tmp_path, f"[[check]]\n{_selector(key)}\n{key} = {toml}\n"))
    assert request == _expected(key, value, name=value if key == "name" else "check 1")


@pytest.mark.parametrize("key", sorted(KEYS))
def test_each_key_above_the_checks_is_inherited_by_them(tmp_path, key):
    toml, value = VALID[key]
    body = f"{key} = {toml}\n[[check]]\n{_selector(key)}\n[[check]]\n{_selector(key)}\n"
    first, second = load_config(config(tmp_path, body))
    if key == "name":  # a default name is every check's name
        assert first == second == _expected(key, value, name=value)
    else:
        assert first == _expected(key, value, name="check 1")
        assert second == _expected(key, value, name="check 2")


# key -> a TOML value of the wrong type, and how the message shows it
WRONG = {
    STR: ("1", "int 1"),
    STR_LIST: ('["gn", 2]', "list ['gn', 2]"),
    INT_LIST: ('"2"', "str '2'"),
    INT: ("1.5", "float 1.5"),
    NUM: ('"1e-5"', "str '1e-5'"),
}


@pytest.mark.parametrize("key", sorted(KEYS))
def test_each_key_with_a_wrong_type_is_one_error_naming_the_file_and_key(tmp_path, key):
    expected = KEYS[key][1]
    toml, shown = WRONG.get(expected, ("[[2, -1, 3]]", "list [[2, -1, 3]]"))
    path = config(tmp_path, f"[[check]]\n{_selector(key)}\n{key} = {toml}\n")
    assert refused(path) == f"{path}: [check][1].{key}: expected {expected}, got {shown}"


@pytest.mark.parametrize("key", ["seed", "rtol", "timeout", "groups", "name"])
def test_a_boolean_is_neither_a_number_nor_a_string(tmp_path, key):
    path = config(tmp_path, f'{key} = true\n[[check]]\nop = "gn"\n')
    assert refused(path) == f"{path}: {key}: expected {KEYS[key][1]}, got bool True"


@pytest.mark.parametrize(
    "toml, shown",
    [
        ("[2, 64]", "list [2, 64]"),  # one shape, not a list of shapes
        ("[[]]", "list [[]]"),
        ("[[2, -1]]", "list [[2, -1]]"),
        ("[[2, 1.5]]", "list [[2, 1.5]]"),
        ('"2,64"', "str '2,64'"),
    ],
)
def test_malformed_shapes_are_refused_with_the_value(tmp_path, toml, shown):
    path = config(tmp_path, f'[[check]]\nop = "gn"\nshapes = {toml}\n')
    assert refused(path) == (
        f"{path}: [check][1].shapes: expected a list of shapes, each a list of non-negative integers, got {shown}"
    )


def test_a_shape_with_a_size_of_zero_is_a_shape_like_on_the_command_line(tmp_path):
    """Empty tensors are an edge real kernels get wrong: [0, 8] is checked, as --shape 0,8 is."""
    path = config(tmp_path, '[[check]]\nop = "ln"\nshapes = [[0, 8], "2,0,4"]\n')
    (request,) = load_config(path)
    assert list(request.shapes) == [[0, 8], "2,0,4"]


def test_a_long_wrong_value_is_shortened_in_the_message(tmp_path):
    path = config(tmp_path, f'[[check]]\nop = "gn"\nseed = "{"9" * 60}"\n')
    assert refused(path) == f"{path}: [check][1].seed: expected an integer, got str '{'9' * 36}..."


def test_in_pyproject_the_key_is_named_under_tool_normcheck(tmp_path):
    path = config(tmp_path, '[tool.normcheck]\n[[tool.normcheck.check]]\nop = "gn"\nseed = "x"\n', "pyproject.toml")
    assert refused(path) == f"{path}: [tool.normcheck.check][1].seed: expected an integer, got str 'x'"
    path = config(tmp_path, '[tool.normcheck]\nrtol = "x"\n[[tool.normcheck.check]]\nop = "gn"\n', "pyproject.toml")
    assert refused(path) == f"{path}: [tool.normcheck].rtol: expected a number, got str 'x'"


def test_the_error_names_the_check_by_its_position(tmp_path):
    path = config(tmp_path, '[[check]]\nop = "gn"\n[[check]]\nop = "ln"\n[[check]]\nop = "bn"\nseed = 1.0\n')
    assert refused(path) == f"{path}: [check][3].seed: expected an integer, got float 1.0"


# -- inheritance ---------------------------------------------------------------------------------


def test_checks_inherit_the_top_level_keys_and_override_them(tmp_path):
    body = (
        'dtypes = ["float32", "float16"]\nseed = 3\nrtol = 1e-4\natol = 1e-5\n'
        '[[check]]\nname = "ours"\nop = "gn"\nshapes = [[2, 4, 3]]\n'
        '[[check]]\nop = "ln"\ndtypes = "float64"\nseed = 0\n'
    )
    ours, second = load_config(config(tmp_path, body))
    assert ours == Request(
        name="ours", ops="gn", shapes=[[2, 4, 3]], dtypes=["float32", "float16"], seed=3, rtol=1e-4, atol=1e-5
    )
    assert second == Request(name="check 2", ops="ln", dtypes="float64", seed=0, rtol=1e-4, atol=1e-5)


def test_an_alias_in_a_check_overrides_the_other_spelling_above_it(tmp_path):
    [request] = load_config(config(tmp_path, 'dtypes = ["float16"]\n[[check]]\nop = "gn"\ndtype = "float64"\n'))
    assert request.dtypes == "float64"


@pytest.mark.parametrize(
    ("first", "second"), [("op", "ops"), ("dtypes", "dtype"), ("input", "inputs"), ("framework", "frameworks")]
)
def test_both_spellings_of_a_key_in_one_table_are_refused(tmp_path, first, second):
    value = {"op": '"gn"', "ops": '"ln"', "dtype": '"float32"', "dtypes": '"float64"'}
    value |= {"input": '"normal"', "inputs": '"constant"', "framework": '"torch"', "frameworks": '"jax"'}
    body = f'[[check]]\nimpl = "x.py:f"\n{first} = {value[first]}\n{second} = {value[second]}\n'
    message = refused(config(tmp_path, body))
    assert message.endswith(f"[check][1].{second}: {first} is given too; they are the same key, give one")


def test_pyproject_checks_inherit_tool_normcheck(tmp_path):
    body = (
        '[project]\nname = "mypkg"\n[tool.normcheck]\nframeworks = ["torch"]\ntimeout = 30\n'
        '[[tool.normcheck.check]]\nimpl = "mypkg/layers.py:Norm"\nop = "rms"\n'
    )
    [request] = load_config(config(tmp_path, body, "pyproject.toml"))
    assert request == Request(name="check 1", impl="mypkg/layers.py:Norm", ops="rms", frameworks=["torch"], timeout=30)


# -- ranges --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "momentum = 0",
        "momentum = 1",
        "rtol = 0.0",
        "atol = 0",
        "eps = 2.2250738585072014e-308",
        "eps = 0.9999999999999999",
        "rtol = 0.9999999999999999",
        "timeout = 1e-3",
        "groups = 1",
        "groups = [1, 2]",
        "normalized_ndim = [1, 3]",
    ],
)
def test_the_edges_of_each_range_are_accepted(tmp_path, line):
    key = line.partition(" = ")[0]
    partner = f"\n{PARTNER[key][0]} = {PARTNER[key][1]}" if key in PARTNER else ""
    [request] = load_config(config(tmp_path, f'[[check]]\nop = "gn"\n{line}{partner}\n'))
    assert getattr(request, KEYS[key][0]) == tomllib.loads(line)[key]


@pytest.mark.parametrize(
    "line, reason",
    [
        ("momentum = -0.1", "must be in [0, 1] (the weight of the new batch), got -0.1"),
        ("momentum = 1.0000001", "must be in [0, 1] (the weight of the new batch), got 1.0000001"),
        ("atol = -1e-9", "must be at least 0, got -1e-09"),
        ("rtol = 1", "must be at least 0 and below 1 (rtol 1 allows any value of the right sign), got 1"),
        ("eps = -0.0", f"{EPS_RANGE} (a stabilizer, small against the variance), got -0.0"),
        ("eps = 1.0", f"{EPS_RANGE} (a stabilizer, small against the variance), got 1.0"),
        ("timeout = -5", "must be positive, got -5"),
        ("groups = 0", "must be positive, got 0"),
        ("normalized_ndim = [1, -1]", "must be positive, got [1, -1]"),
        ("eps = nan", "must be a finite number, got nan"),
        ("momentum = -inf", "must be a finite number, got -inf"),
        ("timeout = inf", "must be a finite number, got inf"),
    ],
)
def test_each_range_is_checked_at_the_top_level_too(tmp_path, line, reason):
    key = line.partition(" = ")[0]
    path = config(tmp_path, f'{line}\n[[check]]\nop = "gn"\n')
    assert refused(path) == f"{path}: {key}: {reason}"


def test_ranges_cover_only_numeric_keys():
    assert set(RANGES) <= {k for k, (_, kind) in KEYS.items() if kind in (NUM, INT_LIST)}
    assert {k for k, (_, kind) in KEYS.items() if kind == INT_LIST} <= set(RANGES)


# -- unknown keys and the file's structure ---------------------------------------------------------


def test_an_unknown_key_in_a_check_names_it_and_lists_the_valid_keys(tmp_path):
    path = config(tmp_path, '[[check]]\nop = "gn"\nepsilon = 1e-5\n')
    assert refused(path) == f"{path}: [check][1].epsilon: unknown key; valid keys are {', '.join(sorted(KEYS))}"


def test_an_unknown_key_at_the_top_level_is_refused_before_the_checks(tmp_path):
    path = config(tmp_path, 'tolerance = 1e-3\n[[check]]\nop = "gn"\nseed = "x"\n')
    assert refused(path).startswith(f"{path}: tolerance: unknown key; valid keys are against, atol, axes, backward,")


def test_an_unknown_table_is_an_unknown_key(tmp_path):
    path = config(tmp_path, '[[check]]\nop = "gn"\n[check.extra]\nx = 1\n')  # a table in the last check
    assert refused(path).startswith(f"{path}: [check][1].extra: unknown key;")
    path = config(tmp_path, '[defaults]\nseed = 1\n[[check]]\nop = "gn"\n')
    assert refused(path).startswith(f"{path}: defaults: unknown key;")


def test_shard_is_not_a_config_key(tmp_path):
    """Sharding splits one run across machines: a command-line choice, not a project setting."""
    assert "shard" not in KEYS
    path = config(tmp_path, '[[check]]\nop = "gn"\nshard = "1/2"\n')
    assert refused(path).startswith(f"{path}: [check][1].shard: unknown key;")


@pytest.mark.parametrize(
    "body, name, reason",
    [
        ('op = "gn"\n', "normcheck.toml", "the file lists no checks; add a [[check]]"),
        (
            '[tool.normcheck]\nop = "gn"\n',
            "pyproject.toml",
            "[tool.normcheck] lists no checks; add a [[tool.normcheck.check]]",
        ),
        ("check = 3\n", "normcheck.toml", "[check] must be an array of tables ([[...check]])"),
        ('check = ["gn"]\n', "normcheck.toml", "[check] must be an array of tables ([[...check]])"),
        ("[tool]\nnormcheck = 3\n", "pyproject.toml", "[tool.normcheck] must be a table"),
        ("[[check]]\nop = gn\n", "normcheck.toml", "not valid TOML: "),
    ],
)
def test_a_malformed_file_is_one_error_naming_it(tmp_path, body, name, reason):
    path = config(tmp_path, body, name)
    message = refused(path)
    assert message.startswith(f"{path}: {reason}")


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(UsageError) as info:
        load_config(tmp_path / "nope.toml")
    assert str(info.value) == f"config file {tmp_path / 'nope.toml'} does not exist"


def test_a_pyproject_without_tool_normcheck_is_no_config(tmp_path):
    path = config(tmp_path, '[project]\nname = "mypkg"\n[tool.ruff]\nline-length = 100\n', "pyproject.toml")
    assert find_config(tmp_path) is None
    with pytest.raises(UsageError) as info:
        load_config(path)
    assert str(info.value) == f"{path} has no [tool.normcheck] table"


def test_find_config_in_an_empty_directory_is_none(tmp_path):
    assert find_config(tmp_path) is None


def test_find_config_finds_a_pyproject_with_tool_normcheck(tmp_path):
    path = config(tmp_path, '[tool.normcheck]\n[[tool.normcheck.check]]\nop = "gn"\n', "pyproject.toml")
    assert find_config(tmp_path) == path


def test_normcheck_toml_takes_precedence_over_pyproject(tmp_path):
    config(tmp_path, '[tool.normcheck]\n[[tool.normcheck.check]]\nop = "ln"\n', "pyproject.toml")
    own = config(tmp_path, '[[check]]\nop = "gn"\n')
    assert find_config(tmp_path) == own
    assert [r.ops for r in load_config(find_config(tmp_path))] == ["gn"]


def test_normcheck_toml_is_found_even_when_it_is_broken(tmp_path):
    """Precedence is by name: a broken normcheck.toml is reported, not skipped for pyproject."""
    config(tmp_path, '[tool.normcheck]\n[[tool.normcheck.check]]\nop = "ln"\n', "pyproject.toml")
    own = config(tmp_path, "[[check]\n")
    assert find_config(tmp_path) == own
    assert refused(own).startswith(f"{own}: not valid TOML: ")


def test_a_directory_named_like_the_config_is_not_a_config(tmp_path):
    (tmp_path / "normcheck.toml").mkdir()
    assert find_config(tmp_path) is None
