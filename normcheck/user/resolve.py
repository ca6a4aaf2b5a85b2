"""From ``--impl`` (and ``--backward``, ``--style``, ``--op``, ``--framework``) to the frameworks
that check a user implementation, or to the row that says why it could not be loaded."""

from __future__ import annotations

from typing import Any

from normcheck.errors import UsageError
from normcheck.frameworks import FUNCTION
from normcheck.names import ALL_OP_NAMES, OpName
from normcheck.parsing import choose
from normcheck.user import (
    FORMS,
    BindingError,
    FormError,
    LoadError,
    SpecError,
    UserFramework,
    detect_form,
    guess_op,
    user_frameworks,
)
from normcheck.user.spec import ImplSpec, load_object, parse_spec
from normcheck.verify.records import CheckResult, load_error_row


def impl_label(value: Any) -> tuple[ImplSpec | None, str]:
    if isinstance(value, str):
        try:
            spec = parse_spec(value)
        except SpecError as e:
            raise UsageError(str(e)) from None
        return spec, spec.attr
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None) or type(value).__name__
    return None, name


def _load(value: Any) -> tuple[str, object]:
    spec, name = impl_label(value)
    return name, (value if spec is None else load_object(spec))


def resolve_impl(
    request: Any, framework: str | None, ops_given: list[str]
) -> tuple[tuple[OpName, ...], list[UserFramework], list[CheckResult]]:
    """(ops, frameworks, load_rows) for the request's implementation."""
    from normcheck import frameworks as registry

    spec_label = request.impl if isinstance(request.impl, str) else impl_label(request.impl)[1]
    _, name = impl_label(request.impl)
    ops = choose(",".join(ops_given), ALL_OP_NAMES, "op", ())
    if not ops:
        guessed = guess_op(name)
        if guessed is None:
            raise UsageError(f"cannot tell which op {name} implements; give --op")
        ops = (guessed,)
    if request.style is not None and request.backward is None:
        raise UsageError(f"--style {request.style} takes the backward function too: give --backward FILE:NAME")
    if request.backward is not None and request.style is None:
        raise UsageError("--backward is for NumPy forward/backward pairs: give --style cs231n too")
    try:
        name, obj = _load(request.impl)
        backward = _load(request.backward)[1] if request.backward is not None else None
        form = detect_form(obj, framework, request.style, name)
    except SpecError as e:
        raise UsageError(str(e)) from None
    except (LoadError, FormError) as e:
        return ops, [], [load_error_row(op, spec_label, str(e)) for op in ops]
    needed = FORMS[form].framework
    if not registry.is_installed(needed):
        extra = registry.REGISTRY[needed].extra
        raise UsageError(
            f"{name} is {FORMS[form].title}, but {needed} is not installed; pip install 'normcheck[{extra}]'"
        )
    layout, param_shape = getattr(request, "layout", None), getattr(request, "param_shape", "flat")
    if FORMS[form].kind != FUNCTION and (layout is not None or param_shape != "flat"):
        raise UsageError(f"--layout and --param-shape describe a function; {name} is {FORMS[form].title}")
    fws = user_frameworks(name, obj, form, backward, layout, param_shape)
    for op in ops:
        try:
            if not fws[0].implementations(op):
                raise UsageError(f"{FORMS[form].title} has no {op}; --op takes one of the ops it has")
        except BindingError as e:
            raise UsageError(str(e)) from None
    return ops, fws, []
