"""``normcheck model``: a user's model loaded in a worker process, and every normalization layer in it.

The parent never imports the model's framework or runs the model's code: it resolves the SPEC
(``source.py``), sends it to a worker (``run.py`` and ``task.py``, through the engine's worker
process), and gets back an ``Inventory`` of plain records (``records.py``).

    records.py          NormLayer, ParamSummary, Inventory: frozen, picklable, with a flat as_dict()
    source.py           a SPEC or a model file, checked in the parent without importing anything
    run.py              the parent's side: one worker, a time limit, one clear error for bad input
    task.py             the worker's side: load the model, inventory it, send the records back
    loaders.py          which loader takes the model: by file suffix, else by the object's type
    stats.py            weight, bias and running-statistic summaries (shape, dtype, min/max/mean)
    candidates.py       user-written layers that look like norm layers (listed as unconfirmed)
    torch_modules.py    torch.nn.Module trees, eager or TorchScript
    torch_export.py     torch.export programs (.pt2)
    keras_layers.py     Keras 3 models
    flax_modules.py     Flax linen (module, variables) and nnx modules
    onnx_graph.py       an index of an ONNX graph: producers, consumers, constants, types
    onnx_fused.py       ONNX's norm ops and ONNX Runtime's contrib ops
    onnx_decomposed.py  the subgraphs exporters emit for layer, RMS, instance and group norm
    onnx_model.py       an ONNX model's inventory: every graph, fused and decomposed
"""
