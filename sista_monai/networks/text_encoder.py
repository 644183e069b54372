"""Hugging Face text encoder returning global and token features.

At paper scale this is Bio_ClinicalBERT (``emilyalsentzer/Bio_ClinicalBERT``, or a local folder holding
it); for the demo and CI it is a small BERT built from a ``BertConfig`` whose vocabulary is the WordPiece
tokenizer trained on the demo reports (see :mod:`sista_monai.data.tokenizer`), so everything runs offline.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from .outputs import TextEncoderOutput

__all__ = ["HuggingFaceTextEncoder"]

logger = logging.getLogger(__name__)


class HuggingFaceTextEncoder(nn.Module):
    """Any Hugging Face encoder (BERT family) by hub id or local folder, or built from a config.

    Exactly one of ``name_or_path`` and ``config`` is given:

    * ``name_or_path``: a hub id or a local folder with ``config.json`` and weights, loaded with
      ``AutoModel.from_pretrained(..., local_files_only=local_files_only)``; ``local_files_only=True`` (the
      default) never touches the network, so a hub id works only when it is already in the local cache;
    * ``config``: keyword arguments of ``AutoConfig.for_model`` (``model_type`` defaults to ``"bert"``) for
      a randomly initialised model; ``vocab_size`` defaults to the size of ``tokenizer``'s vocabulary.

    The pooler of BERT-style models is dropped (it is not used, and unused parameters break DDP).

    Args:
        name_or_path: hub id or local folder of a pretrained model.
        config: configuration of a model built from scratch.
        tokenizer: tokenizer folder or hub id whose vocabulary size a from-scratch model takes.
        local_files_only: never download (default); set ``False`` to allow a hub download.
        pooling: ``"cls"`` (first token) or ``"mean"`` (mean over attended tokens) for the global vector.
        freeze_layers: freeze the embeddings and the first N transformer layers (0 = train everything).
        revision: model revision (a commit hash pins the exact weights).

    Raises:
        ValueError: both or neither of ``name_or_path``/``config``; an unknown pooling; more frozen layers
            than the model has.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike | None = None,
        config: dict[str, Any] | None = None,
        tokenizer: str | os.PathLike | None = None,
        local_files_only: bool = True,
        pooling: str = "cls",
        freeze_layers: int = 0,
        revision: str | None = None,
    ) -> None:
        super().__init__()
        if (name_or_path is None) == (config is None):
            raise ValueError("give exactly one of name_or_path (a pretrained model) and config (a model from scratch)")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.pooling = pooling
        if name_or_path is not None:
            self.model = AutoModel.from_pretrained(os.fspath(name_or_path), local_files_only=local_files_only, revision=revision)
        else:
            settings = dict(config or {})
            model_type = settings.pop("model_type", "bert")
            if "vocab_size" not in settings:
                if tokenizer is None:
                    raise ValueError("a from-scratch text encoder needs config['vocab_size'] or a tokenizer")
                settings["vocab_size"] = len(AutoTokenizer.from_pretrained(os.fspath(tokenizer), local_files_only=local_files_only))
            self.model = AutoModel.from_config(AutoConfig.for_model(model_type, **settings))
        if isinstance(getattr(self.model, "pooler", None), nn.Module):
            self.model.pooler = None
        self.out_channels = int(self.model.config.hidden_size)
        self.freeze(freeze_layers)

    def freeze(self, num_layers: int) -> None:
        """Freeze the embeddings and the first ``num_layers`` transformer layers (0 unfreezes nothing)."""
        if num_layers <= 0:
            return
        layers = self.model.encoder.layer
        if num_layers > len(layers):
            raise ValueError(f"freeze_layers={num_layers} but the model has {len(layers)} layers")
        for module in [self.model.embeddings, *layers[:num_layers]]:
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_mask: torch.Tensor | None = None
    ) -> TextEncoderOutput:
        """Encode ``(B, T)`` token ids.

        Args:
            input_ids: token ids.
            attention_mask: 1 for real tokens, 0 for padding.
            word_mask: tokens that count as words (from :class:`~sista_monai.transforms.TokenizeReport`);
                defaults to the attention mask without the first and last attended tokens.
        """
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        attended = attention_mask.bool()
        if self.pooling == "cls":
            global_features = hidden[:, 0]
        else:
            weights = attended.unsqueeze(-1).to(hidden.dtype)
            global_features = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        if word_mask is None:
            word_mask = attended.clone()
            word_mask[:, 0] = False
            last = attended.long().sum(1) - 1
            word_mask[torch.arange(word_mask.shape[0], device=word_mask.device), last.clamp_min(0)] = False
        return TextEncoderOutput(global_features, hidden, word_mask.bool())
