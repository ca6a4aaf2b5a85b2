"""An ONNX model's inventory: its main graph, the subgraphs of its control-flow nodes and its
local functions, each matched for decomposed norm layers first (they claim their nodes), then
read for fused norm ops. Imports onnx only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import onnx

from normcheck.model.onnx_decomposed import match_decomposed, match_grouped_instance_norms
from normcheck.model.onnx_fused import fused_record
from normcheck.model.onnx_graph import GraphView, type_info
from normcheck.model.records import Findings, NormLayer


def opsets_of(entries: Any) -> dict[str, int]:
    """{domain: version} of opset_import entries; the default domain is ""."""
    return {("" if e.domain in ("", "ai.onnx") else e.domain): int(e.version) for e in entries}


def _views(model: onnx.ModelProto, types: dict[str, int], ranks: dict[str, int]) -> Iterator[GraphView]:
    opsets = opsets_of(model.opset_import)
    main = model.graph
    inits = {t.name: t for t in main.initializer}
    yield GraphView(list(main.node), inits, opsets, "", dict(types), dict(ranks))
    yield from _subgraphs(main, inits, opsets, "")
    for function in model.functions:
        fn_opsets = {**opsets, **opsets_of(function.opset_import)}
        prefix = f"{function.domain}.{function.name}/" if function.domain else f"{function.name}/"
        yield GraphView(list(function.node), {}, fn_opsets, prefix)


def _subgraphs(
    graph: onnx.GraphProto, outer: dict[str, onnx.TensorProto], opsets: dict[str, int], prefix: str
) -> Iterator[GraphView]:
    """The bodies of If, Loop and Scan nodes (and any other graph attribute), depth first."""
    for i, node in enumerate(graph.node):
        for a in node.attribute:
            bodies = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            for k, body in enumerate(bodies):
                name = node.name or f"{node.op_type}#{i}"
                where = f"{prefix}{name}/{a.name}{k if len(bodies) > 1 else ''}/"
                inits = {**outer, **{t.name: t for t in body.initializer}}  # outer initializers stay visible
                yield GraphView(list(body.node), inits, opsets, where)
                yield from _subgraphs(body, inits, opsets, where)


def inspect_graph(g: GraphView) -> list[NormLayer]:
    claimed: set[int] = set()
    found = match_grouped_instance_norms(g, claimed) + match_decomposed(g, claimed)
    for i, node in enumerate(g.nodes):
        if i in claimed:
            continue
        record = fused_record(g, i, node)
        if record is not None:
            found.append((i, record))
    return [record for _, record in sorted(found, key=lambda item: item[0])]


def inspect_onnx(model: onnx.ModelProto) -> Findings:
    found = Findings()
    found.opsets = tuple(sorted(opsets_of(model.opset_import).items()))
    types, ranks, note = type_info(model)
    if note:
        found.note(note)
    for view in _views(model, types, ranks):
        for record in inspect_graph(view):
            found.add(record)
    return found
