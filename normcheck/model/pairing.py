"""Which norm layer of a port stands for which of its source (``normcheck port``).

Three ways, tried in this order, each on the layers the previous ones left:

1. ``--map FILE``: the user's pairs (TOML or JSON, source path -> port path);
2. names, with separators normalized: ``layer1.0.bn1``, ``layer1_0_bn1``, ``layer1/0/bn1`` and
   the ONNX node ``/layer1/layer1.0/bn1/BatchNormalization`` (PyTorch's exporter names a node
   after its module's scopes) all read ``layer1 0 bn1``; a name that is the end of another
   (``bn1`` in ``block/bn1``) pairs only when it is the one such name on both sides;
3. order: what is left, in inventory order, aligned on the op sequence (difflib), so a missing
   layer leaves the rest paired; a run of the same length with other ops pairs one to one (a
   group norm ported as instance norm is a pair with a finding, not two unpaired layers).

The inventory order is the model's own: Keras's functional graph and ONNX's nodes are in
execution (topological) order; PyTorch's is the order the modules were registered in
(``named_modules``), which is the execution order unless ``forward`` calls them in another one;
a Flax module's is its attributes' (setup) or call order (compact). Where it is not, the names or
``--map`` pair the layers. Nothing here imports a framework.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from normcheck.errors import UsageError
from normcheck.model.records import NormLayer

BY_MAP, BY_NAME, BY_ORDER = "map", "name", "order"
ONNX_FRAMEWORK = "onnxruntime"
_SEPARATORS = re.compile(r"[./_:\-\s]+")


@dataclass(frozen=True)
class Pairing:
    """One source layer and its port (either may be None: unpaired), and how they were paired."""

    src: NormLayer | None
    dst: NormLayer | None
    by: str  # BY_MAP, BY_NAME, BY_ORDER, or "" when unpaired


def name_tokens(path: str) -> tuple[str, ...]:
    """'layer1.0.bn1', 'layer1_0_bn1' and 'layer1/0/bn1' → ('layer1', '0', 'bn1')."""
    return tuple(t for t in _SEPARATORS.split(path.lower()) if t)


def onnx_scope(path: str) -> str | None:
    """The module path an ONNX node's name carries: '/layer1/layer1.0/bn1/BatchNormalization' →
    'layer1.0.bn1' (a scope that extends the previous one with '.' replaces it); the first node of a
    subgraph ('/gn2/Reshape../gn2/Add') names it. None for a name without scopes."""
    first = path.split("..", 1)[0]
    parts = [p for p in first.split("/") if p]
    if not first.startswith("/") or len(parts) < 2:
        return None
    scope = ""
    for part in parts[:-1]:  # the last part is the node's own name (its op type)
        scope = part if not scope or part.startswith(scope + ".") else f"{scope}.{part}"
    return scope


def name_keys(layer: NormLayer) -> tuple[tuple[str, ...], ...]:
    keys = [name_tokens(layer.path)]
    if layer.framework == ONNX_FRAMEWORK:
        scope = onnx_scope(layer.path)
        if scope:
            keys.insert(0, name_tokens(scope))
    return tuple(k for k in keys if k)


def load_map(path: Path) -> dict[str, str]:
    """The pairs of a ``--map`` file: a TOML or JSON table of source path → port path (at the top, or
    under ``[pairs]``). UsageError for a file that is not readable, not such a table, or pairs one
    layer twice."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--map {path}: cannot read it ({type(e).__name__}: {e})") from None
    data: object
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"--map {path}: not valid JSON ({e})") from None
    else:
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            hint = " (write it as TOML, or name it .json)" if text.lstrip().startswith("{") else ""
            raise UsageError(f"--map {path}: not valid TOML ({e}){hint}") from None
    if isinstance(data, dict) and set(data) == {"pairs"} and isinstance(data["pairs"], dict):
        data = data["pairs"]
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise UsageError(
            f'--map {path}: expected a table of source layer path = port layer path ("layer1.0.bn1" = "layer1_0_bn1")'
        )
    seen: dict[str, str] = {}
    for src, dst in data.items():
        if dst in seen:
            raise UsageError(f"--map {path}: {dst!r} is paired with both {seen[dst]!r} and {src!r}")
        seen[dst] = src
    return dict(data)


def _check_map(mapping: dict[str, str], src: Sequence[NormLayer], dst: Sequence[NormLayer]) -> None:
    src_paths, dst_paths = {layer.path for layer in src}, {layer.path for layer in dst}
    for side, paths, names in (("source", src_paths, list(mapping)), ("port", dst_paths, list(mapping.values()))):
        missing = [name for name in names if name not in paths]
        if missing:
            known = ", ".join(sorted(paths)[:8]) + (", …" if len(paths) > 8 else "")
            raise UsageError(
                f"--map: no norm layer {missing[0]!r} in the {side} model (its norm layers: {known or 'none'})"
            )


def _by_name(src: list[NormLayer], dst: list[NormLayer]) -> list[tuple[NormLayer, NormLayer]]:
    """Pairs whose names agree: equal token sequences first, then one name ending the other, each
    only where it is the one candidate on both sides."""
    pairs: list[tuple[NormLayer, NormLayer]] = []
    for suffix in (False, True):
        taken_s = {id(s) for s, _ in pairs}
        taken_d = {id(d) for _, d in pairs}
        left_s = [s for s in src if id(s) not in taken_s]
        left_d = [d for d in dst if id(d) not in taken_d]

        def agree(a: NormLayer, b: NormLayer, suffix: bool = suffix) -> bool:
            for ka in name_keys(a):
                for kb in name_keys(b):
                    if ka == kb:
                        return True
                    short, long = (ka, kb) if len(ka) <= len(kb) else (kb, ka)
                    if suffix and long[len(long) - len(short) :] == short:
                        return True
            return False

        for s in left_s:
            matches = [d for d in left_d if agree(s, d)]
            if len(matches) == 1 and [t for t in left_s if agree(t, matches[0])] == [s]:
                pairs.append((s, matches[0]))
    return pairs


def _op_key(layer: NormLayer) -> str:
    return str(layer.op or "?")


def _by_order(src: list[NormLayer], dst: list[NormLayer]) -> list[tuple[NormLayer, NormLayer]]:
    matcher = difflib.SequenceMatcher(a=[_op_key(s) for s in src], b=[_op_key(d) for d in dst], autojunk=False)
    pairs: list[tuple[NormLayer, NormLayer]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            pairs.extend(zip(src[i1:i2], dst[j1:j2], strict=True))
    return pairs


def pair_layers(
    src: Sequence[NormLayer], dst: Sequence[NormLayer], mapping: dict[str, str] | None = None
) -> list[Pairing]:
    """Every layer of both models once: pairs and unpaired layers, in the source's order, a port's
    unpaired layer after the pair holding the port layer before it."""
    mapping = mapping or {}
    _check_map(mapping, src, dst)
    by_path_s = {layer.path: layer for layer in src}
    by_path_d = {layer.path: layer for layer in dst}
    found: list[tuple[NormLayer, NormLayer, str]] = [(by_path_s[s], by_path_d[d], BY_MAP) for s, d in mapping.items()]
    for how, pair in ((BY_NAME, _by_name), (BY_ORDER, _by_order)):
        taken_s = {id(s) for s, _, _ in found}
        taken_d = {id(d) for _, d, _ in found}
        left_s = [s for s in src if id(s) not in taken_s]
        left_d = [d for d in dst if id(d) not in taken_d]
        found.extend((s, d, how) for s, d in pair(left_s, left_d))
    src_index = {id(layer): i for i, layer in enumerate(src)}
    dst_index = {id(layer): i for i, layer in enumerate(dst)}
    result = [Pairing(s, d, how) for s, d, how in sorted(found, key=lambda p: src_index[id(p[0])])]
    paired_s = {id(p.src) for p in result}
    paired_d = {id(p.dst) for p in result}
    for layer in src:  # unpaired source layers: after the pair of the source layer before them
        if id(layer) not in paired_s:
            at = next(
                (k for k, p in enumerate(result) if p.src is not None and src_index[id(p.src)] > src_index[id(layer)]),
                len(result),
            )
            result.insert(at, Pairing(layer, None, ""))
    for layer in dst:
        if id(layer) not in paired_d:
            before = [
                k for k, p in enumerate(result) if p.dst is not None and dst_index[id(p.dst)] < dst_index[id(layer)]
            ]
            at = before[-1] + 1 if before else next((k for k, p in enumerate(result) if p.dst is not None), len(result))
            result.insert(at, Pairing(None, layer, ""))
    return result
