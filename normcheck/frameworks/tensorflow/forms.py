"""The TensorFlow forms module of the registry (normcheck.frameworks.FORMS): which implementation
checks a user's object for an op, by form (``tf_function``, ``keras_layer``) and op: the norms
and their fused and adaLN forms (normcheck.frameworks.tensorflow.norm_forms), FP8 output
(normcheck.frameworks.tensorflow.quantized), Weight Standardization
(normcheck.frameworks.tensorflow.ws)."""

from __future__ import annotations

from normcheck.frameworks.tensorflow import quantized, ws
from normcheck.frameworks.tensorflow.norm_forms import (
    FunctionImplementation,
    FusedFunctionImplementation,
    KerasLayerImplementation,
    KerasModulationImplementation,
    ModulationFunction,
    TensorFlowImplementation,
    keras_binder,
    keras_fused_binder,
)
from normcheck.ops import FUSED_BASE
from normcheck.ops.adaptive_layer_norm import ADALN
from normcheck.ops.fused_add import FUSED_ADD
from normcheck.ops.layer_norm import AXES, NOBIAS
from normcheck.ops.quantize import QUANTIZED_OPS
from normcheck.ops.rms_norm import GEMMA
from normcheck.ops.weight_standardization import WS_OPS
from normcheck.user.binding import BoundFunction


def build(
    form: str, op: str, obj: object, name: str, omit_defaults: bool, backward: object | None = None
) -> TensorFlowImplementation:
    if op in WS_OPS:  # a convolution: normcheck.frameworks.tensorflow.ws
        return ws.build(form, op, obj, name, omit_defaults)
    if form == "tf_function":
        if op in FUSED_BASE or op == ADALN:  # one calling convention each, not bound by name
            if not callable(obj):
                raise TypeError(f"the tf_function form takes a function, not a {type(obj).__name__}")
            if op == ADALN:
                return ModulationFunction(obj, name, omit_defaults)
            return FusedFunctionImplementation(op, obj, name)
        if op in QUANTIZED_OPS and callable(obj) and not isinstance(obj, BoundFunction):  # its names bind no norm
            return quantized.QuantizedOnlyFunction(op, obj, name)
        if not isinstance(obj, BoundFunction):  # normcheck.user binds the function by name first
            raise TypeError(f"the tf_function form takes a function bound by name, not a {type(obj).__name__}")
        return quantized.QuantizedFunction(obj, name) if op in QUANTIZED_OPS else FunctionImplementation(obj, name)
    if form != "keras_layer":
        raise ValueError(f"the tensorflow forms have no form {form!r}")
    if not isinstance(obj, type):  # normcheck.user.detect_form gives this form classes only
        raise TypeError(f"the keras_layer form takes a keras.layers.Layer subclass, not a {type(obj).__name__}")
    if op == ADALN:
        return KerasModulationImplementation(obj, name, omit_defaults)
    if op in FUSED_BASE:
        impl = KerasLayerImplementation(op, name, keras_fused_binder(obj, op, omit_defaults), running_stats=False)
        impl.extensions = frozenset({FUSED_ADD})
        return impl
    if op in QUANTIZED_OPS:  # with FP8-quantized output (--quantize) too
        impl = quantized.QuantizedKerasLayer(obj, op, name, omit_defaults)
    else:
        impl = KerasLayerImplementation(op, name, keras_binder(obj, op, omit_defaults), running_stats=op == "bn")
    # constructed as the Keras layer: Gemma's stored weight set as is (the layer adds the 1), layer
    # norm without bias as center=False, over any axes as axis=[...]
    impl.extensions = impl.extensions | {GEMMA, NOBIAS, AXES}
    return impl
