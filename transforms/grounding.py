"""Ground-truth transforms for measuring patch–word grounding (the STA pointing game).

* :class:`FindingZoneMaskd` draws the lung zones of an item's findings (``[x, y, width, height]`` DICOM
  pixel boxes, as the demo datalist gives them) into a ``(1, W, H)`` mask in the loaded image's geometry, so
  the same MONAI spatial transforms that resize, pad and crop the image carry the zone along.
* :class:`ZoneWordMaskd` marks the tokens of a tokenised report that name a zone (``right``, ``lower``,
  ``apical``...): the words whose best-matching patch the pointing game checks.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["ZONE_WORDS", "FindingZoneMaskd", "ZoneWordMaskd"]

ZONE_WORDS = frozenset(
    {"right", "left", "upper", "middle", "mid", "lower", "apical", "apex", "apices", "basal", "basilar", "base",
     "bases", "lobe", "zone", "lingula", "lingular", "perihilar", "retrocardiac"}
)
"""Words that locate a finding in the lungs (lower case, whole tokens)."""


class FindingZoneMaskd(MapTransform):
    """Draw the zones of an item's findings into a ``(1, W, H)`` float mask beside the image.

    Args:
        keys: the image key whose (already loaded) geometry the mask takes.
        findings_key: list of ``{"name", "zone", "box"}`` findings.
        zones_key: ``{zone name: [x, y, width, height]}`` of the item.
        output_key: where the mask goes.
        finding_names: findings whose zones count (default: all with a zone).
        use_zone: draw the finding's whole zone rectangle (default) instead of its own box.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        findings_key: str = "findings",
        zones_key: str = "zones",
        output_key: str = "zone_mask",
        finding_names: Sequence[str] | None = None,
        use_zone: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.findings_key, self.zones_key, self.output_key = findings_key, zones_key, output_key
        self.finding_names = None if finding_names is None else set(finding_names)
        self.use_zone = use_zone

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            mask = torch.zeros((1, *image.shape[1:]), dtype=torch.float32)
            zones = d.get(self.zones_key) or {}
            for finding in d.get(self.findings_key) or []:
                if self.finding_names is not None and finding.get("name") not in self.finding_names:
                    continue
                box = zones.get(finding.get("zone")) if self.use_zone else finding.get("box")
                if not box:
                    continue
                x, y, w, h = (int(round(v)) for v in box)
                mask[0, max(x, 0) : x + w, max(y, 0) : y + h] = 1.0
            d[self.output_key] = MetaTensor(mask, affine=image.affine, meta=dict(image.meta)) if isinstance(image, MetaTensor) else mask
        return d


class ZoneWordMaskd(MapTransform):
    """Mark the tokens that are zone words (whole WordPiece tokens in :data:`ZONE_WORDS`).

    Args:
        keys: the ``input_ids`` key.
        tokenizer: the Hugging Face tokenizer (object, folder or hub id) that produced the ids.
        output_key: where the ``(T,)`` bool mask goes.
        words: the zone vocabulary.
        word_mask_key: restrict to tokens of this word mask when present.
    """

    def __init__(
        self,
        keys: KeysCollection = "input_ids",
        tokenizer: Any = None,
        output_key: str = "pointing_mask",
        words: Sequence[str] = tuple(sorted(ZONE_WORDS)),
        word_mask_key: str | None = "word_mask",
        local_files_only: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if tokenizer is None:
            raise ValueError("ZoneWordMaskd needs the tokenizer that produced the ids")
        if isinstance(tokenizer, str) or hasattr(tokenizer, "__fspath__"):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=local_files_only)
        vocab = tokenizer.get_vocab()
        self.word_ids = torch.tensor(sorted(vocab[w] for w in words if w in vocab), dtype=torch.long)
        self.output_key, self.word_mask_key = output_key, word_mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            ids = torch.as_tensor(d[key])
            mask = torch.isin(ids, self.word_ids)
            if self.word_mask_key and self.word_mask_key in d:
                mask &= torch.as_tensor(d[self.word_mask_key]).bool()
            d[self.output_key] = mask
        return d
