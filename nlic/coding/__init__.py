"""Real coding: image -> bytes -> image (tiles, latents, wavefront residual coding)."""
