"""``nlic bench``: classic codecs and the learned codec side by side, every decode verified.

* :mod:`nlic.bench.codecs` - codec adapters and their registry;
* :mod:`nlic.bench.runner` - tasks, encode/decode/verify, results.json;
* :mod:`nlic.bench.report` - means table (results.md), plots, CompressAI JSON, W&B.
"""

from nlic.bench.codecs import CODECS, Codec, CodecOptions, Setting, register_codec

__all__ = ["CODECS", "Codec", "CodecOptions", "Setting", "register_codec"]
