"""Weight Standardization's convention (``ws``, ``ws_gn``), as data that imports no framework.

No framework has Weight Standardization built in; PyTorch models write it as timm's
``StdConv2d`` (timm/layers/std_conv.py): ``F.batch_norm`` over the weight viewed as
(1, O, I*kh*kw) with ``training=True`` (population variance, eps inside the square root),
``eps=1e-6``, ``bias=False``, then ``F.conv2d``. That is the convention the PyTorch adapter and
the PyTorch user forms are held to (``--eps`` replaces the eps). BiT's StdConv2d is the same
formula with eps 1e-10; the paper's own code (Bessel-corrected std, eps 1e-5 added to it) is
``--variant paper``.
"""

from __future__ import annotations

from normcheck.conventions import CHANNELS_FIRST, Convention

_API = "none built in: timm's StdConv2d, F.batch_norm(w.reshape(1, O, -1), training=True) + F.conv2d"
_REDUCTION = "the weight (O, I, kh, kw), per output channel over (I, kh, kw); population variance"
WS_CONVENTIONS = {
    "ws": Convention(
        "torch",
        "ws",
        api=_API,
        eps=1e-6,
        layout=CHANNELS_FIRST,
        reduction=_REDUCTION,
        affine="conv bias (O,), off (bias=False)",
    ),
    "ws_gn": Convention(
        "torch",
        "ws_gn",
        api=_API + " + F.group_norm",
        eps=1e-6,
        layout=CHANNELS_FIRST,
        reduction=_REDUCTION,
        affine="no conv bias; the group norm's affine (O,), on",
        notes="the group norm after it: F.group_norm with eps 1e-5 (nn.GroupNorm's default, BiT's and timm's)",
    ),
}
