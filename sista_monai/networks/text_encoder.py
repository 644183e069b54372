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
from transformers import AutoConfig, AutoModel

from sista_monai.io.weights import quiet_transformers
from sista_monai.transforms.tokenizer import load_tokenizer

from .outputs import TextEncoderOutput

__all__ = ["HuggingFaceTextEncoder", "aggregate_word_pieces"]

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
        tokenizer: the tokenizer (object, folder or hub id) whose vocabulary size a from-scratch model takes.
        local_files_only: never download (default); set ``False`` to allow a hub download.
        pooling: ``"cls"`` (first token) or ``"mean"`` (mean over attended tokens) for the global vector.
        freeze_layers: freeze the embeddings and the first N transformer layers (0 = train everything).
        revision: model revision (a commit hash pins the exact weights).
        pretrained_weights: with ``config``, a local Hugging Face folder whose weights initialise the model built
            from ``config`` (e.g. the demo's masked-language-model, :mod:`sista_monai.data.demo_text`); ``None``
            keeps the random initialisation. The architecture stays the one ``config`` describes, so a checkpoint
            of the bundle loads whether or not the folder exists on the machine that loads it.

    Raises:
        ValueError: both or neither of ``name_or_path``/``config``; an unknown pooling; more frozen layers
            than the model has; ``pretrained_weights`` without ``config`` or holding other parameters than
            ``config`` describes.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike | None = None,
        config: dict[str, Any] | None = None,
        tokenizer: str | os.PathLike | Any = None,
        local_files_only: bool = True,
        pooling: str = "cls",
        freeze_layers: int = 0,
        revision: str | None = None,
        pretrained_weights: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if (name_or_path is None) == (config is None):
            raise ValueError("give exactly one of name_or_path (a pretrained model) and config (a model from scratch)")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.pooling = pooling
        if name_or_path is not None and pretrained_weights is not None:
            raise ValueError(
                "pretrained_weights initialises a model built from config; with name_or_path leave it None"
            )
        if name_or_path is not None:
            with quiet_transformers(report=True):  # its load report is the word on missing weights
                self.model = AutoModel.from_pretrained(
                    os.fspath(name_or_path), local_files_only=local_files_only, revision=revision
                )
        else:
            settings = dict(config or {})
            model_type = settings.pop("model_type", "bert")
            if "vocab_size" not in settings:
                if tokenizer is None:
                    raise ValueError("a from-scratch text encoder needs config['vocab_size'] or a tokenizer")
                settings["vocab_size"] = len(load_tokenizer(tokenizer, local_files_only))
            self.model = AutoModel.from_config(AutoConfig.for_model(model_type, **settings))
            if pretrained_weights is not None:
                self._load_weights(os.fspath(pretrained_weights))
        if isinstance(getattr(self.model, "pooler", None), nn.Module):
            self.model.pooler = None
        self.out_channels = int(self.model.config.hidden_size)
        self.pretrained = name_or_path is not None or pretrained_weights is not None
        """Whether the weights come from a pretrained model (``False``: a random initialisation)."""
        self.freeze(freeze_layers)

    def _load_weights(self, folder: str) -> None:
        with quiet_transformers():  # the comparison below names every missing or mismatched weight
            source = AutoModel.from_pretrained(folder, local_files_only=True).state_dict()
        own = self.model.state_dict()
        missing = sorted(k for k in own if k not in source)
        unexpected = sorted(k for k in source if k not in own and not k.startswith("pooler."))  # the pooler is dropped
        mismatched = sorted(k for k in own if k in source and source[k].shape != own[k].shape)
        if missing or unexpected or mismatched:
            raise ValueError(
                f"text encoder weights in {folder} do not fit the configured model: missing {missing[:5]}, "
                f"not in the model {unexpected[:5]}, "
                f"shape mismatch {[(k, tuple(source[k].shape), tuple(own[k].shape)) for k in mismatched[:5]]}; "
                "build it with the same config (hidden_size, layers, heads, vocabulary)"
            )
        self.model.load_state_dict({k: source[k] for k in own})

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
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_mask: torch.Tensor | None = None,
        word_start: torch.Tensor | None = None,
    ) -> TextEncoderOutput:
        """Encode ``(B, T)`` token ids.

        Args:
            input_ids: token ids.
            attention_mask: 1 for real tokens, 0 for padding.
            word_mask: tokens that count as words (from :class:`~sista_monai.transforms.TokenizeReport`);
                defaults to the attention mask without the first and last attended tokens.
            word_start: ``(B, T)`` position of the first piece of each word token's word, ``-1`` elsewhere
                (:func:`~sista_monai.transforms.tokenizer.word_positions`). When given, the pieces of a word are
                aggregated into one token feature (their mean, at the first piece), and only first pieces stay
                in ``token_mask``: token-level alignment sees words, not WordPiece fragments (MGCA sums a word's
                piece embeddings; the mean keeps a long word's feature on the scale of a one-piece word's
                before the projection head).
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
        word_mask = word_mask.bool()
        if word_start is not None:
            hidden, word_mask = aggregate_word_pieces(hidden, word_mask, word_start)
        return TextEncoderOutput(global_features, hidden, word_mask)


def aggregate_word_pieces(
    hidden: torch.Tensor, word_mask: torch.Tensor, word_start: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the pieces of every word into its first piece; keep only first pieces in the word mask.

    Args:
        hidden: ``(B, T, H)`` token features.
        word_mask: ``(B, T)`` bool, the word tokens.
        word_start: ``(B, T)`` long, the first-piece position of each word token's word, ``-1`` elsewhere.

    Returns:
        ``(features, mask)``: ``features`` equals ``hidden`` except at the first piece of a multi-piece word, which
        holds the mean of the word's pieces; ``mask`` is ``word_mask`` restricted to first pieces.
    """
    valid = word_mask & (word_start >= 0)
    index = torch.where(valid, word_start, torch.zeros_like(word_start))
    weights = valid.to(hidden.dtype)
    summed = torch.zeros_like(hidden).scatter_add(
        1, index.unsqueeze(-1).expand_as(hidden), hidden * weights.unsqueeze(-1)
    )
    count = torch.zeros_like(weights).scatter_add(1, index, weights)
    positions = torch.arange(hidden.shape[1], device=hidden.device).expand_as(word_start)
    first = valid & (word_start == positions)
    features = torch.where(first.unsqueeze(-1), summed / count.clamp_min(1.0).unsqueeze(-1), hidden)
    return features, first
