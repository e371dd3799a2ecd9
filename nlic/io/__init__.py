"""Image input/output and safe (atomic) output files for the codec CLI."""

from nlic.io.atomic import atomic_output, atomic_write_bytes, check_not_same_file, check_output_path
from nlic.io.images import MAX_PIXELS, DecodedImage, encode_image, output_format, read_image, write_image

__all__ = [
    "MAX_PIXELS",
    "DecodedImage",
    "atomic_output",
    "atomic_write_bytes",
    "check_not_same_file",
    "check_output_path",
    "encode_image",
    "output_format",
    "read_image",
    "write_image",
]
