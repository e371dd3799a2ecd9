"""Mixed precision and ``torch.compile`` where they are safe for a compression model.

Rates are sums of ``-log2(p)`` over every latent and pixel, and CompressAI's entropy models compute
``p`` from differences of CDFs (``EntropyBottleneck``'s small matmul network, ``GaussianConditional``'s
``erfc``): in bfloat16 (8-bit mantissa) these lose most of their precision.  So under
``trainer.precision=bf16-mixed`` only the transforms run in bf16; every entropy model runs in float32
with autocast off (:func:`keep_likelihoods_fp32`), and :class:`~nlic.system.NearLosslessCodec` does
the same for the residual mixture likelihood.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def _to_fp32(value):
    if torch.is_tensor(value) and value.dtype in (torch.float16, torch.bfloat16):
        return value.float()
    return value


class _FP32Forward:
    """Replacement ``forward`` of one module: float32 inputs, autocast disabled.

    A plain callable object (not a closure) so the module still deep-copies and pickles.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, *args, **kwargs):
        device = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
        with torch.autocast(device_type=device, enabled=False):
            args = tuple(_to_fp32(a) for a in args)
            kwargs = {k: _to_fp32(v) for k, v in kwargs.items()}
            return type(self.module).forward(self.module, *args, **kwargs)


def _entropy_model_types() -> tuple[type, ...]:
    """CompressAI's entropy-model base class, for ``isinstance``; none where CompressAI is not
    installed (then no module is one: a model without a lossy layer trains without CompressAI)."""
    try:
        from compressai.entropy_models import EntropyModel
    except ImportError:
        return ()
    return (EntropyModel,)


def keep_likelihoods_fp32(root: nn.Module) -> int:
    """Make every CompressAI entropy model under ``root`` run in float32 even inside autocast.

    Idempotent; a no-op outside autocast (fp32 inputs stay as they are).  Returns how many modules
    were wrapped.
    """
    entropy_models = _entropy_model_types()
    count = 0
    for module in root.modules():
        if isinstance(module, entropy_models) and not isinstance(module.__dict__.get("forward"), _FP32Forward):
            module.forward = _FP32Forward(module)
            count += 1
    return count


def compile_lossy_transforms(codec: nn.Module, **compile_kwargs) -> list[str]:
    """``torch.compile`` the lossy codec's transforms in place (``nn.Module.compile``).

    Compiles every direct child of ``codec.lossy`` (or of ``codec`` itself, a bare lossy codec) that
    holds parameters and is not an entropy model (analysis/synthesis/hyper transforms, context
    models); entropy models and the residual coder stay eager.  In-place compilation keeps the
    ``state_dict`` keys, so checkpoints and the exported ``model.pt`` look exactly like an uncompiled
    run's.  Returns the compiled children's names.
    """
    entropy_models = _entropy_model_types()
    lossy = getattr(codec, "lossy", codec)  # a NearLosslessCodec or a bare lossy codec
    names = []
    for name, child in lossy.named_children():
        if isinstance(child, entropy_models) or not any(True for _ in child.parameters()):
            continue
        child.compile(**compile_kwargs)
        names.append(name)
    log.info("torch.compile: lossy transforms %s", names)
    return names
