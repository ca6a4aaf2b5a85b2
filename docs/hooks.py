"""MkDocs hook: pages generated from normcheck's own data.

A hand-written page holds a placeholder such as ``<!-- generated: conventions -->`` (some take
an argument: ``<!-- generated: known-defects torch -->``); ``on_page_markdown`` replaces it with
Markdown built from the code, so the site cannot drift from what normcheck does.

Every import of normcheck is in the data-source functions right below, one per source, so a
module that moves is fixed here and nowhere else; they return plain data, so the renderers below
them depend on no normcheck name. Only the known defects may need a framework imported (read from
its adapter); a framework that is not installed then gives a note in the page instead of its
table, and the build still passes.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the working tree's normcheck, installed or not

log = logging.getLogger("mkdocs.hooks.normcheck")


# --------------------------------------------------------------------------------------------
# Data sources: every import of normcheck is here, one function per source.
# --------------------------------------------------------------------------------------------


def op_names() -> tuple[str, ...]:
    """The ops the CLI offers, in its order."""
    from normcheck.names import OP_NAMES

    return tuple(OP_NAMES)


def op_titles() -> dict[str, str]:
    """Op name -> title ("gn" -> "group norm"), as ``normcheck conventions`` prints them."""
    from normcheck.report.conventions import OP_TITLES

    return dict(OP_TITLES)


def convention_rows(frameworks: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The rows of ``normcheck conventions``: one per op and property, with the porting rule."""
    from normcheck import porting

    return porting.convention_rows(op_names(), tuple(frameworks or porting.FRAMEWORK_ORDER))


def hypotheses() -> list[tuple[str, str]]:
    """The diagnosis library: (id, title) of each hypothesis, in the order they are tried (Weight
    Standardization's own library last: it is tried on ws and ws_gn cases instead)."""
    from normcheck.diagnosis.hypotheses import HYPOTHESES
    from normcheck.diagnosis.weight_standardization import WS_HYPOTHESES

    return [(h.id, h.title) for h in (*HYPOTHESES, *WS_HYPOTHESES)]


def framework_registry() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The frameworks ``verify`` checks: name -> (pip extra, import names that must be installed)."""
    from normcheck.frameworks import FRAMEWORKS

    return {name: (info.extra or "", tuple(info.probe)) for name, info in FRAMEWORKS.items()}


def known_issues(framework: str) -> list[dict[str, Any]]:
    """A framework's documented defects (its KnownIssue entries), as plain dicts, read from its
    facts module (which imports no framework)."""
    from normcheck.frameworks import facts_module

    issues = facts_module(framework).KNOWN_ISSUES
    fields = ("cause", "ops", "impls", "dtypes", "layouts", "kinds", "checks", "devices", "batch")
    return [{f: getattr(k, f) for f in fields} for k in issues]


def cli_command() -> Any:
    """The click command behind the typer app (``normcheck`` and its subcommands)."""
    import typer.main

    from normcheck.cli import app

    return typer.main.get_command(app)


def config_schema() -> dict[str, Any]:
    """The config file: its names, every key with the Request field and type, the range checks."""
    from normcheck.verify.config import CONFIG_FILES, KEYS, RANGES, SELECTING_KEYS

    return {
        "files": tuple(CONFIG_FILES),
        "keys": dict(KEYS),
        "ranges": {key: words for key, (words, _test) in RANGES.items()},
        "selecting": tuple(SELECTING_KEYS),
    }


def package_dir() -> Path:
    """The folder of the normcheck package (its modules are read with ``ast``, not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("normcheck")
    if spec is None or spec.origin is None:
        raise PluginError("normcheck is not importable from the repository root")
    return Path(spec.origin).parent


def policy_records() -> list[dict[str, Any]]:
    """The named precision policies (``normcheck conventions --policies``), one flat record each."""
    from normcheck.policies import POLICIES

    return [p.as_dict() for p in POLICIES.values()]


def tolerance_table() -> dict[str, Any]:
    """The dtype table, the conditioning factor and the witness's variants."""
    from normcheck.verify.tolerance import CONDITIONING_FACTOR, DTYPE_TOLERANCES, WITNESS_VARIANTS

    return {
        "dtypes": dict(DTYPE_TOLERANCES),
        "factor": CONDITIONING_FACTOR,
        "variants": list(WITNESS_VARIANTS),
    }


# --------------------------------------------------------------------------------------------
# Renderers: data -> Markdown. No normcheck import below this line.
# --------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    text = str(value).replace("\n", " ").replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _code_list(values: Iterable[Any] | None, none: str = "any") -> str:
    if values is None:
        return none
    return ", ".join(f"`{v}`" for v in values)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_conventions(arg: str | None) -> str:
    """Per op, each property side by side; properties that differ in bold, with the rule."""
    frameworks = arg.split(",") if arg else None
    rows = convention_rows(frameworks)
    titles = op_titles()
    meta = {"op", "property", "differs", "when porting"}
    columns = [k for k in rows[0] if k not in meta] if rows else []
    with_rule = any(r["differs"] for r in rows)
    parts = []
    for op in dict.fromkeys(r["op"] for r in rows):
        body = []
        for r in (r for r in rows if r["op"] == op):
            prop = f"**{r['property']}**" if r["differs"] else r["property"]
            cells = [prop, *(_cell(r[fw]) for fw in columns)]
            if with_rule:
                cells.append(_cell(r["when porting"]))
            body.append(cells)
        header = ["property", *(f"`{fw}`" for fw in columns)] + (["when porting"] if with_rule else [])
        parts.append(f"### {titles.get(op, op)} (`{op}`)\n\n" + _table(header, body))
    return "\n".join(parts)


def render_hypotheses(arg: str | None) -> str:
    rows = [(f"`{hid}`", _cell(title)) for hid, title in hypotheses()]
    return _table(["`hypothesis` (JSON)", "mistake"], rows)


def render_frameworks(arg: str | None) -> str:
    rows = [
        (f"`{name}`", f"`normcheck[{extra}]`", _code_list(requires))
        for name, (extra, requires) in framework_registry().items()
    ]
    return _table(["framework", "pip extra", "detected by (import names)"], rows)


def render_known_defects(arg: str | None) -> str:
    if not arg:
        raise PluginError("generated: known-defects needs a framework name, e.g. 'known-defects torch'")
    try:
        issues = known_issues(arg)
    except ImportError as e:
        if (e.name or "").startswith("normcheck"):
            raise  # normcheck's own module moved: fix the data source above
        log.info("known defects of %s not generated: %s", arg, e)
        return (
            f'!!! note "Not generated in this build"\n\n'
            f"    `{arg}` was not installed where this site was built ({_cell(e)}), so its\n"
            f"    entries could not be listed; `normcheck verify` always applies them.\n"
        )
    rows = []
    for k in issues:
        where = ", ".join(d.upper() if d == "cpu" else d for d in k["devices"])
        if k["batch"] is not None:
            where += f"; batch of {k['batch']}"
        rows.append(
            (
                _cell(k["cause"]),
                _code_list(k["ops"]),
                _code_list(k["impls"], "every one"),
                _code_list(k["dtypes"]),
                _code_list(k["layouts"]),
                _code_list(k["kinds"]),
                _code_list(k["checks"]),
                where,
            )
        )
    if not rows:
        return f"`{arg}` declares no known defects.\n"
    header = ["cause (as reported)", "ops", "implementations", "dtypes", "layouts", "inputs", "checks", "device"]
    return _table(header, rows)


def _default(param: Any) -> str:
    if getattr(param, "is_flag", False) and not param.secondary_opts:
        return "off"
    value = param.default
    if value is None or value == () or value == []:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value}`"


def render_cli(arg: str | None) -> str:
    import click

    root = cli_command()
    parts = []
    root_ctx = click.Context(root, info_name="normcheck")
    for name, command in root.commands.items():
        ctx = click.Context(command, info_name=name, parent=root_ctx)
        usage = " ".join(command.collect_usage_pieces(ctx))
        help_text = (command.help or "").strip()
        rows = []
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            flags = " / ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
            kind = "" if param.is_flag else param.type.name.upper()
            if getattr(param, "multiple", False):
                kind += " (repeatable)"
            rows.append((flags, _cell(kind), _default(param), _cell(param.help or "")))
        rows.append(("`--help`", "", "", "Show the command's options and exit."))
        parts.append(
            f"## `normcheck {name}`\n\n```text\nnormcheck {name} {usage}\n```\n\n"
            + "\n\n".join(_cell(p) for p in help_text.split("\n\n"))
            + "\n\n"
            + _table(["option", "value", "default", "meaning"], rows)
        )
    return "\n".join(parts)


def render_config_keys(arg: str | None) -> str:
    schema = config_schema()
    rows = []
    for key, (field, expected) in schema["keys"].items():
        rng = schema["ranges"].get(key, "")
        rows.append((f"`{key}`", _cell(expected), _cell(rng), f"`{field}`"))
    return _table(["key", "value", "must be", "fills"], rows)


def render_config_files(arg: str | None) -> str:
    schema = config_schema()
    return ", then ".join(f"`{name}`" for name in schema["files"])


def render_config_selecting(arg: str | None) -> str:
    return " or ".join(f"`{key}`" for key in config_schema()["selecting"])


def render_tolerances(arg: str | None) -> str:
    data = tolerance_table()
    rows = [(f"`{dtype}`", f"{rtol:g}", f"{atol:g}") for dtype, (rtol, atol) in data["dtypes"].items()]
    return _table(["dtype", "rtol", "atol (floor)"], rows)


def render_policies(arg: str | None) -> str:
    """One row per policy, every declared field."""
    records = policy_records()
    header = [k for k in records[0] if k not in ("reduction",)] if records else []
    rows = [[f"`{r[k]}`" if k in ("policy", "formula") else _cell(r[k]) for k in header] for r in records]
    return _table(header, rows)


def render_tolerance_factor(arg: str | None) -> str:
    return f"{tolerance_table()['factor']:g}"


def render_witness_variants(arg: str | None) -> str:
    return str(len(tolerance_table()["variants"]))


def _first_paragraph(path: Path) -> str:
    import ast

    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return " ".join(doc.split("\n\n")[0].split())


def render_modules(arg: str | None) -> str:
    """Every module of the package with the first paragraph of its docstring, folder by folder."""
    root = package_dir()
    parts = []
    folders = sorted({p.parent for p in root.rglob("*.py") if "__pycache__" not in p.parts})
    for folder in folders:
        rel = folder.relative_to(root.parent).as_posix()
        rows = []
        for path in sorted(folder.glob("*.py")):
            if path.name == "__main__.py":
                continue
            name = f"`{path.name}`" if path.name != "__init__.py" else f"`{folder.name}/`"
            rows.append((name, _cell(_first_paragraph(path))))
        if rows:
            parts.append(f"**`{rel}/`**\n\n" + _table(["module", "what it holds"], rows))
    return "\n".join(parts)


GENERATORS: dict[str, Callable[[str | None], str]] = {
    "conventions": render_conventions,
    "hypotheses": render_hypotheses,
    "frameworks": render_frameworks,
    "known-defects": render_known_defects,
    "cli": render_cli,
    "config-keys": render_config_keys,
    "config-files": render_config_files,
    "config-selecting": render_config_selecting,
    "tolerances": render_tolerances,
    "tolerance-factor": render_tolerance_factor,
    "witness-variants": render_witness_variants,
    "modules": render_modules,
    "policies": render_policies,
}

PLACEHOLDER = re.compile(r"<!-- generated: ([\w-]+)(?: ([\w,.-]+))? -->")


@cache
def _generate(name: str, arg: str | None) -> str:
    if name not in GENERATORS:
        raise PluginError(f"unknown placeholder 'generated: {name}'; known: {', '.join(GENERATORS)}")
    return GENERATORS[name](arg).rstrip("\n")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        try:
            return _generate(match.group(1), match.group(2))
        except PluginError:
            raise
        except Exception as e:  # a moved module or renamed field: say where, fail the build
            raise PluginError(
                f"{page.file.src_path}: cannot generate '{match.group(0)}': {type(e).__name__}: {e} "
                "(normcheck does not import, or a data source moved: see the data-source functions "
                "at the top of docs/hooks.py)"
            ) from e

    return PLACEHOLDER.sub(replace, markdown)


def on_pre_build(config: Any) -> None:
    _generate.cache_clear()  # each build (``mkdocs serve`` rebuilds) renders afresh
