"""A persistent dataset cache that detects damaged files instead of training on them.

MONAI's :class:`~monai.data.PersistentDataset` recomputes a cache file only when it no longer unpickles; a
file whose tensor bytes were flipped (a bad disk block, a partial copy between machines, a careless edit)
still unpickles and would be trained on. :class:`VerifiedPersistentDataset` writes the SHA-256 of every
cache file to ``<cache file>.sha256`` beside it and, before using a cached item, checks the bytes against
it: a mismatch, a missing checksum or an unloadable file is logged (WARNING, naming the cache file, which is
a hash and carries no patient data) and the item is recomputed from its source and cached again. Both files
are written atomically (temporary file, sync, rename), so a run killed mid-write leaves no damaged entry.

Compact storage (``storage_dtype``): at MIMIC-CXR scale a float32 cache is ~262 KB per 256² image (~99 GB for
377,110 images). With ``storage_dtype="uint8"`` the keys named in ``storage_ranges`` are stored as 8-bit codes
of their declared value range (65.5 KB per 256² image; error at most half a step, i.e. 1/510 of the range:
for a display-normalised image that is 1/510 of its display range, below any 8-bit display's resolution), with
``"float16"`` as half floats; either is turned back into float32 as soon as it is read, so every transform after
the cache sees the float32 it always saw. A stored key whose values are all equal (an all-zero mask) is written
as a one-element tensor expanded to its shape, a few hundred bytes. See :class:`VerifiedPersistentDataset`.

In a bundle config it replaces ``"_target_": "PersistentDataset"`` with the same arguments.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from monai.data import PersistentDataset
from monai.data.utils import SUPPORTED_PICKLE_MOD
from monai.utils import convert_to_tensor, look_up_option

from sista_monai.io import sha256_bytes, write_atomically

__all__ = ["CHECKSUM_SUFFIX", "STORAGE_DTYPES", "VerifiedPersistentDataset"]

logger = logging.getLogger(__name__)

CHECKSUM_SUFFIX = ".sha256"
"""Suffix of the checksum file written beside each cache file (``<hash>.pt.sha256``)."""

STORAGE_DTYPES = ("float32", "float16", "uint8")
"""The ``storage_dtype`` choices; ``None`` is ``"float32"`` (the item stored as computed)."""

_UINT8_LEVELS = 255


class VerifiedPersistentDataset(PersistentDataset):
    """:class:`~monai.data.PersistentDataset` whose cache files are checked against a SHA-256 before use.

    Arguments are ``PersistentDataset``'s, plus the storage ones below. A cache file without its checksum file
    (e.g. written by a plain ``PersistentDataset``) is recomputed once, logged at INFO; one whose bytes do not match
    its checksum, or that does not load, is recomputed with a WARNING naming the file and the reason. Cache files are
    always loaded with ``torch.load(weights_only=True)``. A cache miss returns the item as a later hit will (plain
    tensors unless ``track_meta``), so that a batch mixing cached and new items collates and every epoch sees the
    same types.

    Compact storage is done in MONAI's own hooks for the cached part of the chain: :meth:`_pre_transform` (the
    deterministic transforms, whose result is what gets cached) encodes the ``storage_ranges`` keys after them and
    :meth:`_post_transform` decodes them to float32 before the random transforms. So a miss and a hit give the
    same (quantised) values, the cache files hold the compact tensors (and their SHA-256 covers them), and the
    transform lists of the bundles stay as they are. A transform pair in the chain cannot do it: the decoding one
    would have to sit after the first random transform, which is where MONAI ends the cached part.

    Args:
        storage_dtype: ``None``/``"float32"`` stores items as computed; ``"uint8"`` stores each ``storage_ranges``
            key ``x`` as ``round(255 (x - lo) / (hi - lo))`` and reads it back as ``lo + code (hi - lo) / 255``
            (error at most ``(hi - lo) / 510``); ``"float16"`` stores it as half floats (relative error 2⁻¹¹).
            The cache file names carry the storage (a float32 cache is never read as uint8 codes, nor the
            reverse); float32 keeps the names of a cache written before this option existed.
        storage_ranges: ``{key: (lo, hi)}``: the keys stored compactly and the range their values must lie in
            (e.g. ``(0, 1)`` for a display-normalised image, ``((0 - mean) / std, (1 - mean) / std)`` after
            ``NormalizeIntensityd``). Values are refused, not clipped, when they lie more than half a uint8 step
            outside the range (with either compact dtype), or are not finite: a ``ValueError`` names the item (its
            ``id`` or file) and the key, since such values mean the chain no longer produces what the range says
            (clipping would silently change the data). Values within half a step outside are clipped (float
            rounding at the range ends). Ignored with float32.

    Raises:
        ValueError: ``weights_only=False`` was asked for, an unknown ``storage_dtype``, a compact one without
            ``storage_ranges``, or a range whose ``hi`` is not above its ``lo``.
    """

    def __init__(
        self,
        *args: Any,
        storage_dtype: str | None = None,
        storage_ranges: Mapping[Hashable, Sequence[float]] | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("weights_only", True) is not True:
            raise ValueError("VerifiedPersistentDataset loads its cache files with weights_only=True only")
        dtype = "float32" if storage_dtype is None else str(storage_dtype)
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {STORAGE_DTYPES} or None, got {storage_dtype!r}")
        ranges: dict[Hashable, tuple[float, float]] = {}
        if dtype != "float32":
            if not storage_ranges:
                raise ValueError(f"storage_dtype={dtype!r} needs storage_ranges ({{key: (lo, hi)}})")
            for key, bounds in storage_ranges.items():
                lo, hi = (float(b) for b in bounds)
                if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                    raise ValueError(f"storage_ranges[{key!r}] must be finite (lo, hi) with hi > lo, got {bounds!r}")
                ranges[key] = (lo, hi)
        self.storage_dtype = dtype
        self.storage_ranges = ranges
        super().__init__(*args, **kwargs)
        if self.transform_hash == "":  # no hash_transform: set_transform_hash was not called
            self.transform_hash = self._storage_tag()

    def _storage_tag(self) -> str:
        """What the cache file names carry about the storage: empty for float32 (names as before)."""
        if self.storage_dtype == "float32":
            return ""
        spec = json.dumps([self.storage_dtype, sorted((str(k), v) for k, v in self.storage_ranges.items())])
        return f"-{self.storage_dtype}-{sha256_bytes(spec.encode('utf-8'))[:12]}"

    def set_transform_hash(self, hash_xform_func: Any) -> None:
        """MONAI's hash of the deterministic transforms, followed by the storage tag."""
        super().set_transform_hash(hash_xform_func)
        self.transform_hash += self._storage_tag()

    def _pre_transform(self, item_transformed: Any) -> Any:
        """The deterministic transforms (MONAI's), then the compact encoding of the ``storage_ranges`` keys."""
        source = _describe(item_transformed)
        return self._encode(super()._pre_transform(item_transformed), source)

    def _post_transform(self, item_transformed: Any) -> Any:
        """Float32 again for the ``storage_ranges`` keys, then the random transforms (MONAI's)."""
        return super()._post_transform(self._decode(item_transformed))

    def _encode(self, item: Any, source: str) -> Any:
        if self.storage_dtype == "float32":
            return item
        if isinstance(item, list | tuple):
            return type(item)(self._encode(i, source) for i in item)
        if not isinstance(item, Mapping):
            raise ValueError(f"storage_dtype={self.storage_dtype!r} needs dict items, got {type(item).__name__}")
        out = dict(item)
        for key, (lo, hi) in self.storage_ranges.items():
            if key not in out:
                raise ValueError(f"item {source}: storage_ranges key {key!r} is not in the cached item")
            value = out[key] if isinstance(out[key], torch.Tensor) else torch.as_tensor(out[key])
            value = value.to(torch.float32)
            slack = (hi - lo) / (2 * _UINT8_LEVELS)
            finite = bool(torch.isfinite(value).all())
            if not finite or (value.numel() and (value.min() < lo - slack or value.max() > hi + slack)):
                found = f"[{float(value.min()):.4g}, {float(value.max()):.4g}]" if finite else "non-finite values"
                raise ValueError(
                    f"item {source}: {key!r} has {found} outside its storage range [{lo:.4g}, {hi:.4g}] "
                    f"(storage_dtype={self.storage_dtype!r}); fix the range or store it as float32"
                )
            value = value.clamp(lo, hi)
            if self.storage_dtype == "uint8":
                stored = torch.round((value - lo) * (_UINT8_LEVELS / (hi - lo))).to(torch.uint8)
            else:
                stored = value.to(torch.float16)
            out[key] = _constant_as_view(stored)
        return out

    def _decode(self, item: Any) -> Any:
        if self.storage_dtype == "float32":
            return item
        if isinstance(item, list | tuple):
            return type(item)(self._decode(i) for i in item)
        out = dict(item)
        stored = torch.uint8 if self.storage_dtype == "uint8" else torch.float16
        for key, (lo, hi) in self.storage_ranges.items():
            value = out[key]
            if value.dtype != stored:  # the file names carry the storage: only a hand-placed file gets here
                raise ValueError(f"cached {key!r} is {value.dtype}, not the {stored} of storage_dtype")
            if self.storage_dtype == "uint8":
                out[key] = value.to(torch.float32) * ((hi - lo) / _UINT8_LEVELS) + lo
            else:
                out[key] = value.to(torch.float32)
        return out

    def _cachecheck(self, item_transformed: Any) -> Any:
        if self.cache_dir is None:
            return super()._cachecheck(item_transformed)
        item_hash = self.hash_func(item_transformed).decode("utf-8") + self.transform_hash
        cache_file = self.cache_dir / f"{item_hash}.pt"
        if cache_file.is_file():
            cached = self._read_verified(cache_file)
            if cached is not None:
                return cached
        computed = self._pre_transform(deepcopy(item_transformed))  # keep the original hashed
        return self._write_verified(cache_file, computed)

    @staticmethod
    def checksum_file(cache_file: Path) -> Path:
        """The checksum file of ``cache_file``."""
        return cache_file.with_name(cache_file.name + CHECKSUM_SUFFIX)

    def _read_verified(self, cache_file: Path) -> Any | None:
        """The cached item, or ``None`` (files removed) when it is unverified, damaged or unloadable."""
        checksum_file = self.checksum_file(cache_file)
        try:
            data = cache_file.read_bytes()
            expected = checksum_file.read_text(encoding="ascii").strip() if checksum_file.is_file() else None
        except (OSError, UnicodeDecodeError) as err:
            self._discard(cache_file, f"unreadable ({type(err).__name__}: {err})")
            return None
        if expected is None:
            logger.info("cache file %s has no %s checksum (older cache): recomputing it", cache_file, CHECKSUM_SUFFIX)
            self._discard(cache_file, None)
            return None
        actual = sha256_bytes(data)
        if actual != expected:
            self._discard(
                cache_file, f"SHA-256 {actual[:16]}... differs from the recorded {expected[:16]}... (damaged)"
            )
            return None
        try:
            return torch.load(io.BytesIO(data), weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure to load means: recompute from the source
            self._discard(cache_file, f"not loadable ({type(err).__name__}: {str(err)[:200]})")
            return None

    def _discard(self, cache_file: Path, reason: str | None) -> None:
        if reason is not None:
            logger.warning("corrupt cache file %s: %s; recomputing it from the source item", cache_file, reason)
        cache_file.unlink(missing_ok=True)
        self.checksum_file(cache_file).unlink(missing_ok=True)
        return None

    def _write_verified(self, cache_file: Path, item: Any) -> Any:
        """Cache ``item`` and return it in the form a later cache hit returns (plain tensors unless ``track_meta``).

        MONAI's ``PersistentDataset`` returns the freshly computed item on a miss (MetaTensors) but the stored,
        converted one on a hit; a batch mixing both then fails to collate, which happens whenever a run reuses
        part of an earlier run's cache (e.g. 10 % labels after 1 %). Returning the converted item on a miss
        makes every epoch see the same types.
        """
        converted = convert_to_tensor(item, convert_numeric=False, track_meta=self.track_meta)
        buffer = io.BytesIO()
        torch.save(
            obj=converted,
            f=buffer,
            pickle_module=look_up_option(self.pickle_module, SUPPORTED_PICKLE_MOD),
            pickle_protocol=self.pickle_protocol,
        )
        data = buffer.getvalue()
        digest = sha256_bytes(data)
        try:
            # checksum first: a kill between the two writes leaves a cache file that fails verification
            write_atomically(self.checksum_file(cache_file), lambda stream: stream.write(f"{digest}\n".encode("ascii")))
            write_atomically(cache_file, lambda stream: stream.write(data))
        except PermissionError as err:  # a read-only cache folder: train on, uncached (as MONAI does)
            logger.warning("cannot write the cache file %s (%s); continuing without caching it", cache_file, err)
        return converted


def _constant_as_view(value: torch.Tensor) -> torch.Tensor:
    """A tensor whose elements are all equal as a one-element storage expanded to its shape (stride 0).

    ``torch.save`` writes a tensor's storage, so an all-zero ``(4, 256, 256)`` mask takes 1.6 KB instead of 262 KB:
    the pretraining bundle's grounding masks are all zero for every item without drawn findings (all of MIMIC-CXR's),
    and a chest radiograph is never constant. ``torch.load`` gives the same view back; :meth:`_decode`'s conversion
    to float32 materialises it (contiguous). Exact: no value changes.
    """
    flat = value.reshape(-1)
    if flat.numel() > 1 and bool((flat == flat[0]).all()):
        return flat[:1].clone().expand(value.shape)
    return value


def _describe(item: Any) -> str:
    """How an error names an item: its ``id`` and/or ``image`` file when it has them (no other field)."""
    if isinstance(item, Mapping):
        named = [f"{k}={item[k]!r}" for k in ("id", "image") if isinstance(item.get(k), str | int)]
        if named:
            return " ".join(named)
    return "(without id or image path)"
