"""The .nlic container: versioned, checksummed, never pickle."""

from nlic.bitstream.container import FORMAT_VERSION, MAGIC, Container, TileChunk

__all__ = ["FORMAT_VERSION", "MAGIC", "Container", "TileChunk"]
