"""Corrupt, truncated, foreign and hostile .nlic files: always a clear BitstreamError, quickly.

Two layers are fuzzed.  The container's trailing crc32 catches any change to a file, so the first
tests (truncation, bit flips, insertion, deletion) mostly exercise it and the header checks.  To
reach the layers below it (tile parser, CompressAI's rANS latent decoder, the residual range
decoder, the reconstruction checksum) the other tests mutate the payload and then RECOMPUTE the
crc, as a hostile or buggy writer would.  The property is always: the decoder raises
:class:`~nlic.errors.NlicError` (a BitstreamError) or returns exactly the original decode; it never
hangs, crashes the interpreter or returns a different image.

The files are real photographs (scikit-image) coded with an untrained tiny model: learned tiles
(the stored fallback disabled, so the latent and residual decoders are reached) and, in one file,
stored tiles.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skimage import data as skdata

from nlic.bitstream.container import (
    FORMAT_VERSION,
    LEARNED_KINDS,
    LEARNED_V11,
    STORED_JXL,
    STORED_PNG,
    STORED_UNIFORM,
    TILE_KINDS,
    Container,
    TileChunk,
)
from nlic.cli.main import main
from nlic.codecs.base import LossyCodec, unpack_payload
from nlic.errors import BitstreamError, NlicError

CRC = 4  # bytes of the trailing crc32
#: each corrupt file must be refused (or decoded) within this many seconds
TIME_LIMIT_S = 10.0

FUZZ = settings(
    deadline=5000, max_examples=60, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip
FUZZ_DEEP = settings(FUZZ, max_examples=40)  # examples below the crc can run a whole decode
FUZZ_SLOW = settings(FUZZ, max_examples=400, derandomize=False)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/test_robustness.py
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def codec(tiny_model):
    from nlic.api import load_codec

    return load_codec(tiny_model, tile=64, stored_fallback=False).image_codec


class Decoder:
    """``decompress_full``: the decode as a (pixels, alpha, mode) tuple."""

    def __init__(self, codec) -> None:
        self.codec = codec

    def __call__(self, blob: bytes) -> tuple:
        out = self.codec.decompress(blob)
        return out.pixels, out.alpha, out.mode


@pytest.fixture(scope="module")
def files(codec) -> dict[str, tuple[bytes, tuple]]:
    """name -> (file bytes, its original decode (pixels, alpha, mode))."""
    from nlic.coding.image import ImageCodec

    astro, camera = skdata.astronaut(), skdata.camera()
    rgba = np.ascontiguousarray(astro[120:128, 200:211])  # 8 x 11, one tile, alpha plane from camera
    alpha = np.ascontiguousarray(camera[300:308, 300:311])
    tiled = np.ascontiguousarray(skdata.coffee()[200:206, 300:370])  # 6 x 70: two tiles of 64
    out = {}
    for name, (px, a, tau) in {"rgba": (rgba, alpha, 1), "tiled": (tiled, None, 2)}.items():
        blob = codec.compress(px, tau, alpha=a).data
        out[name] = (blob, Decoder(codec)(blob))
    stored = ImageCodec(codec.loaded, tile=64)  # the fallback on: the untrained model loses to it
    noise = np.random.default_rng(0).integers(0, 256, (9, 70, 3), dtype=np.uint8)
    blob = stored.compress(noise, 3).data
    out["stored"] = (blob, Decoder(stored)(blob))
    assert len(Container.from_bytes(out["tiled"][0]).tiles) == 2
    assert all(t.kind in LEARNED_KINDS for t in Container.from_bytes(out["tiled"][0]).tiles)
    assert {t.kind for t in Container.from_bytes(out["stored"][0]).tiles} <= {STORED_UNIFORM, STORED_PNG}
    return out


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def same_decode(a: tuple, b: tuple) -> bool:
    (pa, aa, ma), (pb, ab, mb) = a, b
    alpha_same = (aa is None and ab is None) or (aa is not None and ab is not None and np.array_equal(aa, ab))
    return ma == mb and pa.shape == pb.shape and np.array_equal(pa, pb) and alpha_same


def check_refused_or_same(codec, blob: bytes, original: tuple) -> str:
    """Decode ``blob``: it must raise NlicError or equal ``original``; return 'refused' or 'same'."""
    t0 = time.perf_counter()
    try:
        result = Decoder(codec)(blob)
    except NlicError as err:
        assert isinstance(err, BitstreamError), repr(err)
        msg = str(err)
        assert msg and "\n" not in msg and "Traceback" not in msg
        outcome = "refused"
    else:
        assert same_decode(result, original), "a corrupt file decoded to a different image"
        outcome = "same"
    assert time.perf_counter() - t0 < TIME_LIMIT_S
    return outcome


# ------------------------------------------------------------------------- whole files, crc intact


@pytest.mark.parametrize(
    "blob, fragment",
    [
        (b"", "empty"),
        (b"N", "magic"),
        (b"NLI", "magic"),
        (b"nlic" + bytes(60), "magic"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "magic"),
        (b"NLIC", "truncated"),
        (b"NLIC\x01", "truncated"),
    ],
)
def test_empty_foreign_and_tiny_files(codec, blob, fragment):
    with pytest.raises(BitstreamError, match=fragment):
        Decoder(codec)(blob)


def test_truncated_at_every_cut_point(codec, files):
    for blob, original in files.values():
        outcomes = {check_refused_or_same(codec, blob[:cut], original) for cut in range(len(blob))}
        assert outcomes == {"refused"}


def test_every_single_bit_flip(codec, files):
    blob, original = files["rgba"]
    for pos in range(len(blob)):
        for bit in range(8):
            bad = bytearray(blob)
            bad[pos] ^= 1 << bit
            assert check_refused_or_same(codec, bytes(bad), original) == "refused", (pos, bit)


def test_newer_version_refused_before_anything_else(codec, files):
    blob, _ = files["rgba"]
    body = bytearray(blob[:-CRC])
    body[4] = FORMAT_VERSION + 1
    for bad in (with_crc(bytes(body)), bytes(body) + blob[-CRC:]):  # crc recomputed, and not
        with pytest.raises(BitstreamError, match=rf"version {FORMAT_VERSION + 1} is newer .* upgrade nlic"):
            Decoder(codec)(bad)
    body[4] = 0
    with pytest.raises(BitstreamError, match="unknown file format version 0"):
        Decoder(codec)(with_crc(bytes(body)))
    body[4] = 1  # nlic 0.1's float format: refused, naming the release that reads it
    with pytest.raises(BitstreamError, match=r"format 1 was written by nlic 0\.1.*pip install"):
        Decoder(codec)(with_crc(bytes(body)))


def test_wrong_magic_and_other_model(codec, files, tiny_model, tmp_path):
    from tests.conftest import make_tiny_model

    blob, _ = files["tiled"]
    with pytest.raises(BitstreamError, match="magic"):
        Decoder(codec)(b"NLIX" + blob[4:])
    from nlic.api import load_codec

    other = load_codec(make_tiny_model(tmp_path / "other.pt", seed=3)).image_codec
    with pytest.raises(BitstreamError) as exc:
        Decoder(other)(blob)
    assert codec.model_id.hex() in str(exc.value) and other.model_id.hex() in str(exc.value)


@given(data=st.data())
@FUZZ
def test_mutated_files_refused(codec, files, data):
    """Byte flips, truncation, insertion, deletion, overwrites anywhere in real files."""
    name = data.draw(st.sampled_from(sorted(files)), label="file")
    blob, original = files[name]
    b = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 3), label="n_mutations")):
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]), label="op")
        pos = data.draw(st.integers(0, max(0, len(b) - 1)), label="pos")
        if op == "flip" and b:
            b[pos] ^= data.draw(st.integers(1, 255), label="xor")
        elif op == "truncate":
            del b[pos:]
        elif op == "insert":
            b[pos:pos] = data.draw(st.binary(min_size=1, max_size=16), label="inserted")
        elif op == "delete":
            del b[pos : pos + data.draw(st.integers(1, 16), label="n_deleted")]
        else:
            chunk = data.draw(st.binary(min_size=1, max_size=16), label="written")
            b[pos : pos + len(chunk)] = chunk
    outcome = check_refused_or_same(codec, bytes(b), original)
    assert outcome == "refused" or bytes(b) == blob


# ----------------------------------------------------------------- below the crc (crc recomputed)


def _mutate_body(data, body: bytearray, label: str) -> None:
    op = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite", "fill"]), label=label)
    pos = data.draw(st.integers(0, len(body) - 1), label=f"{label}_pos")
    if op == "flip":
        body[pos] ^= data.draw(st.integers(1, 255), label=f"{label}_xor")
    elif op == "truncate":
        del body[max(pos, 1) :]
    elif op == "insert":
        body[pos:pos] = data.draw(st.binary(min_size=1, max_size=64), label=f"{label}_bytes")
    elif op == "delete":
        del body[pos : pos + data.draw(st.integers(1, 64), label=f"{label}_n")]
    elif op == "overwrite":
        chunk = data.draw(st.binary(min_size=1, max_size=64), label=f"{label}_bytes")
        body[pos : pos + len(chunk)] = chunk
    else:  # a run of one byte value (0x00 / 0xff runs are what break rANS decoders)
        value = data.draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]), label=f"{label}_value")
        body[pos : pos + data.draw(st.integers(1, 256), label=f"{label}_n")] = bytes([value]) * 256


@given(data=st.data())
@FUZZ_DEEP
def test_payload_mutated_with_valid_crc(codec, files, data):
    """Any byte-level change of the payload, crc recomputed: parser, latent and residual decoders."""
    name = data.draw(st.sampled_from(sorted(files)), label="file")
    blob, original = files[name]
    body = bytearray(blob[:-CRC])
    header = 4 + 1 + 1 + 2 + 4 + 4 + 2 + 8 + 4 + 4 + 4
    if data.draw(st.booleans(), label="payload_only"):  # keep the header: reach the decoders
        payload = bytearray(body[header:])
        _mutate_body(data, payload, "payload")
        body = body[:header] + payload
    else:
        _mutate_body(data, body, "body")
    check_refused_or_same(codec, with_crc(bytes(body)), original)


def _set_payload(t: TileChunk, strings: list[bytes] | None = None, shape: list[int] | None = None) -> None:
    """Replace a learned tile's latent strings or shape (the codec-owned payload, re-serialised)."""
    payload = unpack_payload(t.latents)
    t.latents = LossyCodec.payload_to_bytes(None, type(payload)(strings if strings is not None else payload.strings,
                                                                shape if shape is not None else payload.shape))


def _edit_field(data, c: Container) -> str:
    """Change one structured field of a parsed container; return what was changed."""
    t = c.tiles[data.draw(st.integers(0, len(c.tiles) - 1), label="tile")]
    field = data.draw(
        st.sampled_from(["latent_bytes", "latent_len", "latent_ff", "latent_count", "shape", "adapt", "grid", "scales",
                         "kind", "residual_bytes", "residual_len", "extras", "header"]),
        label="field",
    )  # fmt: skip
    if t.kind not in LEARNED_KINDS and field not in ("kind", "extras", "header"):
        field = "stored"
        body = bytearray(t.stored)
        if body:
            body[data.draw(st.integers(0, len(body) - 1), label="pos")] ^= data.draw(st.integers(1, 255), label="xor")
        t.stored = bytes(body[: data.draw(st.integers(0, len(body) + 8), label="len")])
        return field
    strings = unpack_payload(t.latents).strings if t.kind in LEARNED_KINDS else []
    i = data.draw(st.integers(0, max(0, len(strings) - 1)), label="string")
    if field == "latent_bytes" and strings and strings[i]:
        s = bytearray(strings[i])
        s[data.draw(st.integers(0, len(s) - 1), label="pos")] ^= data.draw(st.integers(1, 255), label="xor")
        strings[i] = bytes(s)
        _set_payload(t, strings)
    elif field == "latent_len" and strings:
        n = data.draw(st.integers(0, 2 * len(strings[i]) + 16), label="len")
        strings[i] = (strings[i] + data.draw(st.binary(min_size=16, max_size=16)) * 8)[:n]
        _set_payload(t, strings)
    elif field == "latent_ff" and strings:
        strings[i] = b"\xff" * data.draw(st.integers(0, 100_000), label="n_ff")
        _set_payload(t, strings)
    elif field == "latent_count":
        _set_payload(t, strings[:i] if data.draw(st.booleans()) else [*strings, b"\x00" * 8])
    elif field == "shape":
        shape = unpack_payload(t.latents).shape
        j = data.draw(st.integers(0, max(0, len(shape) - 1)), label="dim")
        value = data.draw(st.integers(-(2**31), 2**31 - 1) | st.integers(-2, 40), label="value")
        _set_payload(t, shape=[*shape[:j], value, *shape[j + 1 :]])
    elif field == "adapt":
        t.adapt = data.draw(st.binary(max_size=64) | st.just(bytes([7]) + __import__("zlib").compress(bytes(3000))),
                            label="adapt")
    elif field == "grid":
        t.grid = data.draw(st.binary(max_size=16) | st.just(t.grid[:-1]) | st.just(b"\xff" * len(t.grid)), label="grid")
    elif field == "scales":
        t.scales = data.draw(st.binary(max_size=4) | st.just(t.scales[:-1]) | st.just(t.scales + b"\x00"),
                             label="scales")
    elif field == "kind":
        t.kind = data.draw(st.sampled_from(sorted(TILE_KINDS)), label="kind")
        if t.kind not in LEARNED_KINDS and not t.stored:
            t.stored = t.residual
    elif field == "residual_bytes" and t.residual:
        r = bytearray(t.residual)
        r[data.draw(st.integers(0, len(r) - 1), label="pos")] ^= data.draw(st.integers(1, 255), label="xor")
        t.residual = bytes(r)
    elif field == "residual_len":
        n = data.draw(st.integers(0, len(t.residual) + 64), label="len")
        t.residual = (t.residual + data.draw(st.binary(min_size=64, max_size=64)))[:n]
    elif field == "extras":
        c.extras = data.draw(st.binary(max_size=64) | st.just(c.extras[:-1]) | st.just(b""), label="extras")
    elif field == "header":
        what = data.draw(st.sampled_from(["tau", "mode", "height", "width", "recon_crc"]), label="header_field")
        if what == "tau":
            c.tau = data.draw(st.integers(0, 255), label="tau")
        elif what == "mode":
            c.mode = data.draw(st.sampled_from(["RGB", "L", "RGBA", "LA"]), label="mode")
        elif what == "height":
            c.height = data.draw(st.integers(1, 64), label="height")
        elif what == "width":
            c.width = data.draw(st.integers(65, 128), label="width") if len(c.tiles) == 2 else c.width
        else:
            c.recon_crc = data.draw(st.integers(0, 2**32 - 1), label="crc")
    return field


@given(data=st.data())
@FUZZ_DEEP
def test_structured_fields_mutated_with_valid_crc(codec, files, data):
    """Tile fields (kind, latent strings and shapes, scale offsets, residual stream, stored data, alpha,
    header) set to hostile values and re-serialized with a correct crc."""
    name = data.draw(st.sampled_from(sorted(files)), label="file")
    blob, original = files[name]
    c = Container.from_bytes(blob)
    _edit_field(data, c)
    try:
        mutated = c.to_bytes()
    except (struct.error, ValueError, KeyError):
        return  # not representable in the format (e.g. a shape entry beyond int32)
    check_refused_or_same(codec, mutated, original)


@pytest.mark.slow
@given(data=st.data())
@FUZZ_SLOW
def test_structured_fields_mutated_with_valid_crc_long(codec, files, data):
    test_structured_fields_mutated_with_valid_crc.hypothesis.inner_test(codec, files, data)


@pytest.mark.slow
@given(data=st.data())
@FUZZ_SLOW
def test_payload_mutated_with_valid_crc_long(codec, files, data):
    test_payload_mutated_with_valid_crc.hypothesis.inner_test(codec, files, data)


# ------------------------------------------------------------ hostile values, one at a time (fast)


def _retile(blob: bytes, **changes) -> bytes:
    c = Container.from_bytes(blob)
    t: TileChunk = c.tiles[0]
    for key, value in changes.items():
        if key in ("extras", "tau", "height", "width", "tile", "version"):
            setattr(c, key, value)
        elif key == "latent_strings":
            _set_payload(t, strings=value)
        elif key == "latent_shape":
            _set_payload(t, shape=value)
        else:
            setattr(t, key, value)
    if "tile" in changes:
        c.tiles = c.tiles[:1]
    return c.to_bytes()


@pytest.mark.parametrize(
    "changes, fragment",
    [
        # all-ones latent strings: the C++ rANS bypass loop runs off the end of its buffer
        # (segfaulted the interpreter before the decoders were guarded)
        ({"latent_strings": [b"\xff" * 200_000, b"\xff" * 64]}, ""),
        ({"latent_strings": [b"\xff" * 64, b"\xff" * 200_000]}, ""),
        ({"latent_strings": [b"", b""]}, ""),
        ({"latent_strings": [b"\x01"]}, "latent stream cannot be decoded"),
        ({"latent_strings": [b"\0" * 8] * 5}, "latent stream cannot be decoded"),
        ({"latent_shape": [100_000, 100_000]}, "invalid latent shape"),
        ({"latent_shape": [0, 1]}, "invalid latent shape"),
        ({"latent_shape": [-1, 1]}, "invalid latent shape"),
        ({"latent_shape": [1]}, "invalid latent shape"),
        ({"latent_shape": [2, 2]}, "latent shape does not match"),
        ({"adapt": b"\xff"}, "names a channel"),
        ({"adapt": b"\x01garbage"}, "adaptation cannot be decoded"),
        ({"adapt": b"\x01" + zlib.compress(bytes(10))}, "adaptation has the wrong size"),
        ({"adapt": b"\x01" + zlib.compress(bytes([127]) * 100_000)}, "adaptation has the wrong size"),
        ({"latents": b"\x02\x02"}, "latent payload is truncated"),
        ({"kind": STORED_UNIFORM, "stored": b"\x01\x02\x03"}, "multiple of 4"),
        ({"kind": STORED_PNG, "stored": b"\x89PNG\r\n\x1a\n" + bytes(40)}, "stored tile"),
        ({"kind": STORED_JXL, "stored": b"\xff\x0a" + bytes(40), "version": 10}, "stored tile"),
        ({"kind": STORED_JXL, "stored": b"\xff\x0a" + bytes(40), "version": 9}, "unknown tile kind 10"),
        ({"kind": LEARNED_V11, "version": 10}, "unknown tile kind 11"),
        ({"residual": b"\x01\x02\x03"}, "multiple of 4"),
        ({"residual": b""}, ""),
        ({"residual": b"\xff" * 100_000}, ""),
        ({"tau": 255}, ""),
        ({"extras": b"\x89PNG\r\n\x1a\n" + bytes(40)}, "alpha plane"),
        ({"height": 20_000, "width": 5_001, "tile": 20_032}, "megapixel"),
    ],
)
def test_hostile_fields_refused_quickly(codec, files, changes, fragment):
    blob, original = files["rgba"]
    t0 = time.perf_counter()
    with pytest.raises(BitstreamError, match=fragment):
        Decoder(codec)(_retile(blob, **changes))
    assert time.perf_counter() - t0 < TIME_LIMIT_S


def test_alpha_png_bomb_not_decoded(codec, files, monkeypatch):
    """A valid PNG claiming a huge alpha plane is refused from its header, before decoding."""
    import imagecodecs

    blob, _ = files["rgba"]
    bomb = imagecodecs.png_encode(np.zeros((4000, 4000), np.uint8))
    calls = []
    monkeypatch.setattr(imagecodecs, "png_decode", lambda *a, **k: calls.append(1))
    with pytest.raises(BitstreamError, match="alpha plane does not match"):
        Decoder(codec)(_retile(blob, extras=bomb))
    assert not calls


def test_guarded_rans_never_reads_past_its_padding(codec):
    """The zero padding given to CompressAI's decoder is never read past: decoding with garbage
    after the padding gives the same symbols as with zeros there, for hostile strings."""
    from nlic.entropy.range_coder import BoundedRansDecoder, pad_rans_string

    gc = codec.model.lossy.gaussian_conditional
    decoder = gc.entropy_coder._decoder
    assert isinstance(decoder, BoundedRansDecoder)
    rng = np.random.default_rng(0)
    n = 24 * 8 * 8
    cdfs, sizes = gc._quantized_cdf.tolist(), gc._cdf_length.reshape(-1).int().tolist()
    offsets = gc._offset.reshape(-1).int().tolist()
    for indexes in ([0] * n, rng.integers(0, len(sizes), n).tolist()):
        for s in (b"", b"\xff" * 7, b"\xff" * 5000, rng.bytes(3000), b"\xff" * 2000 + rng.bytes(500), b"\xf0" * 999):
            padded = pad_rans_string(s, n)
            a = decoder.inner.decode_with_indexes(padded + bytes(1 << 16), indexes, cdfs, sizes, offsets)
            b = decoder.inner.decode_with_indexes(padded + b"\xab" * (1 << 16), indexes, cdfs, sizes, offsets)
            assert a == b


# -------------------------------------------------------------------------------- through the CLI


def _corrupt_variants(blob: bytes) -> dict[str, bytes]:
    body = bytearray(blob[:-CRC])
    body[4] = FORMAT_VERSION + 1
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x01
    return {
        "empty": b"", "wrong magic": b"GIF89a" + blob[6:], "truncated": blob[: len(blob) // 3],
        "bit flip": bytes(flipped), "newer version": with_crc(bytes(body)),
        "ones latent": _retile(blob, latent_strings=[b"\xff" * 50_000, b"\xff" * 50_000]),
    }  # fmt: skip


def test_cli_refuses_corrupt_files(files, tiny_model, tmp_path, capsys):
    blob, _ = files["rgba"]
    for name, bad in _corrupt_variants(blob).items():
        src, out = tmp_path / "bad.nlic", tmp_path / "bad.png"
        src.write_bytes(bad)
        commands = [["decompress", src, out, "--model", tiny_model]]
        if name != "ones latent":  # a well-formed container: info reads it fine
            commands.append(["info", src])
        for argv in commands:
            rc = main([str(a) for a in argv])
            err = capsys.readouterr().err
            assert rc == 2, (name, err)
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, (name, err)
            assert not out.exists(), name


def test_cli_refuses_corrupt_files_subprocess(files, tmp_path):
    """Fresh processes (fast: the container is checked before torch is imported)."""
    blob, _ = files["rgba"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("NLIC_DEBUG", None)
    nlic = Path(sys.executable).with_name("nlic")
    cmd = [str(nlic)] if nlic.is_file() else [sys.executable, "-m", "nlic.cli.main"]
    for name in ("truncated", "newer version", "empty"):
        src, out = tmp_path / f"{name}.nlic", tmp_path / f"{name}.png"
        src.write_bytes(_corrupt_variants(blob)[name])
        res = subprocess.run([*cmd, "decompress", str(src), str(out)], capture_output=True, text=True,
                             timeout=120, env=env)  # fmt: skip
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and not out.exists(), res.stderr


@pytest.mark.slow
def test_cli_refuses_hostile_latents_subprocess(files, tiny_model, tmp_path):
    """The former segfault, in a fresh process: exit 2 with one line, not a signal."""
    blob, _ = files["rgba"]
    src = tmp_path / "ones.nlic"
    src.write_bytes(_corrupt_variants(blob)["ones latent"])
    res = subprocess.run([sys.executable, "-m", "nlic.cli.main", "decompress", str(src), str(tmp_path / "o.png"),
                          "--model", str(tiny_model)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and not (tmp_path / "o.png").exists()


def test_adaptation_beyond_the_exactness_bound_refused(codec, files):
    """Deltas that would push the integer network past its proven accumulator bound are refused."""
    blob, _ = files["rgba"]
    layer = codec.coder(1).head.channel_out[0]
    rows, cols = layer.weight.shape
    huge = b"\x01" + zlib.compress(bytes([127]) * (rows * (cols + 1)))
    with pytest.raises(BitstreamError, match="bounds"):
        Decoder(codec)(_retile(blob, adapt=huge))
