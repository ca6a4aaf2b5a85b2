"""The few lines of ``inspect`` a reproducer carries to call user code as normcheck binds it:
``OPTIONS`` (normcheck.user.binding.takes: an option the code may name in several ways, such as
eps/epsilon or padding/pad) and ``modulation_text()`` (normcheck.user.modulation.bind_modulation:
adaLN's x, shift and scale by their names). The same text for every framework's scripts, which
must not import normcheck; tests/repro/test_script_helpers.py holds the copies to the originals."""

from __future__ import annotations

from normcheck.user.modulation import MODULATION_ROLES

# normcheck.user.binding.takes: how normcheck gives user code an option it may name in several ways
OPTIONS = '''

def takes(fn, names):
    """The first of ``names`` that ``fn`` (a function, or a class: its constructor) takes by
    keyword, the first of all when it takes **kwargs; None when it takes none of them."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    for name in names:
        if name in params and params[name].kind != inspect.Parameter.POSITIONAL_ONLY:
            return name
    if any(q.kind == inspect.Parameter.VAR_KEYWORD for q in params.values()):
        return names[0]
    return None


def options(fn, *given):
    """Each (names, value) of ``given`` by the name ``fn`` takes it under, left out where it takes
    none: the keyword arguments normcheck gives it."""
    kwargs = {}
    for names, value in given:
        name = takes(fn, names)
        if name is not None:
            kwargs[name] = value
    return kwargs
'''

# normcheck.user.modulation.bind_modulation, as a script does it
MODULATION = '''

# adaLN's arguments and the parameter names that take them (compared case-insensitively)
ROLES = {{
{roles}}}
ROLE_OF = {{name.lower(): role for role, names in ROLES.items() for name in names}}


def modulation(fn):
    """How normcheck calls adaLN code ``fn``: (role -> parameter name, whether it takes eps) where
    its parameters' names say which is x, shift and scale; (None, whether it takes eps) for DiT's
    order, (x, shift, scale, eps) positionally."""
    try:
        sig = inspect.signature(getattr(fn, "python_function", fn))
    except (TypeError, ValueError):
        return None, True
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    params = [p for p in sig.parameters.values() if p.kind not in kinds]
    names = {{}}
    for p in params:
        role = ROLE_OF.get(p.name.lower())
        if role is not None and role not in names and p.kind != p.POSITIONAL_ONLY:
            names[role] = p.name
    unnamed = [p for p in params if p.name not in names.values() and p.default is inspect.Parameter.empty]
    if {{"input", "shift", "scale"}} <= set(names) and not unnamed:
        return names, "eps" in names
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_any = any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values())
    return None, takes_any or len(positional) >= 4


def modulate(fn, binding, x, shift, scale, eps):
    """``fn`` called on x, shift and scale, and eps where it takes one and ``eps`` is given, as
    ``binding`` (``modulation``) says."""
    names, takes_eps = binding
    values = {{"input": x, "shift": shift, "scale": scale}}
    if eps is not None and takes_eps:
        values["eps"] = eps
    if names:
        return fn(**{{names[role]: v for role, v in values.items()}})
    return fn(*values.values())
'''


def modulation_text() -> str:
    """``MODULATION`` with adaLN's roles and the names that take them filled in."""
    return MODULATION.format(roles="".join(f"    {role!r}: {names!r},\n" for role, names in MODULATION_ROLES.items()))
