"""A persistent dataset cache that detects damaged files instead of training on them.

MONAI's :class:`~monai.data.PersistentDataset` recomputes a cache file only when it no longer unpickles; a
file whose tensor bytes were flipped (a bad disk block, a partial copy between machines, a careless edit)
still unpickles and would be trained on. :class:`VerifiedPersistentDataset` writes the SHA-256 of every
cache file to ``<cache file>.sha256`` beside it and, before using a cached item, checks the bytes against
it: a mismatch, a missing checksum or an unloadable file is logged (WARNING, naming the cache file, which is
a hash and carries no patient data) and the item is recomputed from its source and cached again. Both files
are written atomically (temporary file, sync, rename), so a run killed mid-write leaves no damaged entry.

In a bundle config it replaces ``"_target_": "PersistentDataset"`` with the same arguments.
"""

from __future__ import annotations

import io
import logging
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from monai.data import PersistentDataset
from monai.data.utils import SUPPORTED_PICKLE_MOD
from monai.utils import convert_to_tensor, look_up_option

from sista_monai.io import sha256_bytes, write_atomically

__all__ = ["CHECKSUM_SUFFIX", "VerifiedPersistentDataset"]

logger = logging.getLogger(__name__)

CHECKSUM_SUFFIX = ".sha256"
"""Suffix of the checksum file written beside each cache file (``<hash>.pt.sha256``)."""


class VerifiedPersistentDataset(PersistentDataset):
    """:class:`~monai.data.PersistentDataset` whose cache files are checked against a SHA-256 before use.

    Arguments are ``PersistentDataset``'s. A cache file without its checksum file (e.g. written by a plain
    ``PersistentDataset``) is recomputed once, logged at INFO; one whose bytes do not match its checksum,
    or that does not load, is recomputed with a WARNING naming the file and the reason. Cache files are always
    loaded with ``torch.load(weights_only=True)``. A cache miss returns the item as a later hit will (plain tensors
    unless ``track_meta``), so that a batch mixing cached and new items collates and every epoch sees the same types.

    Raises:
        ValueError: ``weights_only=False`` was asked for.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("weights_only", True) is not True:
            raise ValueError("VerifiedPersistentDataset loads its cache files with weights_only=True only")
        super().__init__(*args, **kwargs)

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
            return self._discard(cache_file, f"unreadable ({type(err).__name__}: {err})")
        if expected is None:
            logger.info("cache file %s has no %s checksum (older cache): recomputing it", cache_file, CHECKSUM_SUFFIX)
            return self._discard(cache_file, None)
        actual = sha256_bytes(data)
        if actual != expected:
            return self._discard(
                cache_file, f"SHA-256 {actual[:16]}... differs from the recorded {expected[:16]}... (damaged)"
            )
        try:
            return torch.load(io.BytesIO(data), weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure to load means: recompute from the source
            return self._discard(cache_file, f"not loadable ({type(err).__name__}: {str(err)[:200]})")

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
