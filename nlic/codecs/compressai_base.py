"""Base of the lossy codecs built from CompressAI's entropy models.

CompressAI's ``CompressionModel`` brings the auxiliary loss of the bottlenecks' quantiles,
``update()`` (CDF tables) and state-dict loading that resizes those tables.  It lives apart from
:mod:`nlic.codecs.base` because importing CompressAI costs seconds (its point-cloud datasets pull
in torch_geometric), which a model without a lossy layer never needs.
"""

from __future__ import annotations

from compressai.models import CompressionModel

from nlic.codecs.base import LossyCodec


class CompressAICodec(LossyCodec, CompressionModel):
    """A :class:`LossyCodec` whose entropy models are CompressAI's."""
