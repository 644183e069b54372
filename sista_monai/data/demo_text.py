"""A small BERT pretrained on the demo's own training reports by masked-language modelling.

At paper scale the text encoder starts from Bio_ClinicalBERT, and SIA's ``text_frozen`` report similarity comes
from a frozen copy of it: an encoder that already knows what reports mean. The demo has no such model (nothing is
downloaded), and a randomly initialised BERT gives report features that are all nearly parallel and say nothing
about the findings. :func:`ensure_demo_text_encoder` fills that role: it trains a BERT of the configured size on
the training split's reports (the sections and cleaning the pipeline uses) with the masked-language-modelling
objective of BERT (Devlin et al., 2019: 15 % of the tokens chosen, of which 80 % become ``[MASK]``, 10 % a
random token, 10 % stay), deterministically, in seconds on a CPU, and saves it as a Hugging Face folder that
:class:`~sista_monai.networks.HuggingFaceTextEncoder` loads with ``name_or_path``.

The masking is :class:`transformers.DataCollatorForLanguageModeling`; the loop is a plain PyTorch loop (not
``transformers.Trainer``, which would bring ``accelerate`` and its logging for a few hundred steps on one CPU).

The folder is ``<dataset>/text_encoder/<digest>`` where the digest covers the settings, the tokenizer and the
training reports, so another size or other data never reuses a stale model; it is written to a temporary sibling
and renamed into place (an interrupted run leaves nothing half-written).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from sista_monai.config import as_flag
from sista_monai.io.files import StagedFolder
from sista_monai.io.weights import quiet_transformers

__all__ = ["DEFAULT_MLM", "demo_text_encoder", "ensure_demo_text_encoder", "train_mlm_text_encoder"]

logger = logging.getLogger(__name__)

DEFAULT_MLM: dict[str, Any] = {
    "epochs": 40,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "weight_decay": 0.01,
    "warmup_fraction": 0.1,
    "mlm_probability": 0.15,
}
"""Training settings of the demo MLM (chosen so that it converges in well under a minute on 2 CPU cores)."""


def _training_texts(datalist: Path, parser: str, sections: Sequence[str]) -> list[str]:
    from sista_monai.data.datalist import load_datalist_split
    from sista_monai.transforms import CleanReport, ExtractReportSections

    extract, clean = ExtractReportSections(parser, tuple(sections)), CleanReport()
    items = load_datalist_split(str(datalist), "training")
    return [
        clean(extract(item["report"], source=item.get("id", "report")), source=item.get("id", "report"))
        for item in items
    ]


def train_mlm_text_encoder(
    texts: Sequence[str],
    tokenizer: str | os.PathLike,
    config: Mapping[str, Any],
    out_dir: str | os.PathLike,
    max_length: int = 112,
    seed: int = 0,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Train a BERT masked-language model on ``texts`` and save its encoder folder.

    Args:
        texts: the training reports (already sectioned and cleaned).
        tokenizer: the tokenizer folder (saved beside the model too).
        config: ``BertConfig`` keyword arguments (``hidden_size``, ``num_hidden_layers``...); ``vocab_size`` is
            the tokenizer's.
        out_dir: the folder to write (``config.json``, weights, tokenizer files, ``mlm.json``).
        max_length: tokens per report, special tokens included.
        seed: the random seed of the initialisation, masking and order.
        settings: overrides of :data:`DEFAULT_MLM`.

    Returns:
        ``{"first_loss", "final_loss", "seconds"}``: the MLM loss of the first and the last epoch.
    """
    from transformers import AutoTokenizer

    options = {**DEFAULT_MLM, **(settings or {})}
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(os.fspath(tokenizer), local_files_only=True)
    generator = torch.Generator().manual_seed(seed)
    # the caller's random state is left as it was: a bundle that trains this model on its first run and loads it
    # from disk on later runs must initialise everything else identically
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        losses = _train_mlm(tok, texts, config, options, generator, max_length, out_dir)
    summary = {"first_loss": losses[0], "final_loss": losses[-1], "seconds": time.perf_counter() - start}
    (Path(out_dir) / "mlm.json").write_text(
        json.dumps({**summary, "settings": options, "reports": len(texts), "seed": seed}, indent=2, sort_keys=True)
        + "\n"
    )
    return summary


def _train_mlm(
    tok: Any,
    texts: Sequence[str],
    config: Mapping[str, Any],
    options: Mapping[str, Any],
    generator: torch.Generator,
    max_length: int,
    out_dir: str | os.PathLike,
) -> list[float]:
    from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling

    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), **{k: v for k, v in config.items() if k != "model_type"}))
    encoded = tok(list(texts), max_length=max_length, truncation=True)  # padded per batch by the collator
    collator = DataCollatorForLanguageModeling(
        tok, mlm=True, mlm_probability=float(options["mlm_probability"]), return_tensors="pt"
    )
    batch_size, epochs = int(options["batch_size"]), int(options["epochs"])
    steps = epochs * max(1, -(-len(texts) // batch_size))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(options["learning_rate"]), weight_decay=float(options["weight_decay"])
    )
    warmup = max(1, int(float(options["warmup_fraction"]) * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup)))
    )
    model.train()
    losses: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(len(texts), generator=generator)
        epoch_loss, count = 0.0, 0
        for begin in range(0, len(texts), batch_size):
            index = order[begin : begin + batch_size]
            features = [{"input_ids": encoded["input_ids"][i]} for i in index.tolist()]
            state = torch.get_rng_state()
            torch.set_rng_state(generator.get_state())
            batch = collator(features)  # masking draws from the global generator: hand it ours
            generator.set_state(torch.get_rng_state())
            torch.set_rng_state(state)
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            epoch_loss += float(loss.detach()) * len(index)
            count += len(index)
        losses.append(epoch_loss / count)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.bert.save_pretrained(os.fspath(out))
        tok.save_pretrained(os.fspath(out))
    return losses


def _digest(
    texts: Sequence[str],
    tokenizer: Path,
    config: Mapping[str, Any],
    max_length: int,
    seed: int,
    settings: Mapping[str, Any],
) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"config": dict(config), "max_length": max_length, "seed": seed, "settings": dict(settings)}, sort_keys=True
        ).encode()
    )
    for name in ("tokenizer.json", "vocab.txt"):
        if (tokenizer / name).is_file():
            h.update((tokenizer / name).read_bytes())
    for text in texts:
        h.update(text.encode("utf-8") + b"\0")
    return h.hexdigest()[:16]


def ensure_demo_text_encoder(
    data_root: str | os.PathLike,
    config: Mapping[str, Any],
    max_length: int = 112,
    seed: int = 0,
    parser: str = "mimic",
    sections: Sequence[str] = ("impression", "findings"),
    settings: Mapping[str, Any] | None = None,
    tokenizer: str | os.PathLike | None = None,
) -> str:
    """The folder of a BERT pretrained on ``data_root``'s training reports, trained when missing.

    Args:
        data_root: the demo dataset folder (``datalist_pretrain.json`` and ``tokenizer/``).
        config: the BERT size (``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``,
            ``intermediate_size``, ``max_position_embeddings``), as in the bundle's ``text_encoder#config``.
        max_length: tokens per report.
        seed: the MLM seed.
        parser: report parser of the pipeline (``"mimic"``).
        sections: the sections the pipeline composes.
        settings: overrides of :data:`DEFAULT_MLM`.
        tokenizer: the pipeline's tokenizer folder (default ``<data_root>/tokenizer``).

    Returns:
        The folder, as a string (for ``pretrained_weights``).
    """
    root = Path(data_root)
    tokenizer = Path(tokenizer) if tokenizer is not None else root / "tokenizer"
    options = {**DEFAULT_MLM, **(settings or {})}
    texts = _training_texts(root / "datalist_pretrain.json", parser, sections)
    target = root / "text_encoder" / _digest(texts, tokenizer, config, max_length, seed, options)
    if (target / "mlm.json").is_file():
        return str(target)
    with StagedFolder(target, keep=lambda folder: (folder / "mlm.json").is_file()) as staging:  # first one stays
        summary = train_mlm_text_encoder(texts, tokenizer, config, staging, max_length, seed, options)
    logger.info(
        "demo text encoder pretrained (masked-language modelling on %d training reports, loss %.2f -> %.2f, %.1f s)",
        len(texts),
        summary["first_loss"],
        summary["final_loss"],
        summary["seconds"],
    )
    return str(target)


def demo_text_encoder(
    data_root: str | os.PathLike,
    config: Mapping[str, Any],
    demo_data: bool | str = True,
    **kwargs: Any,
) -> str | None:
    """The pretraining bundle's ``text_pretrained``: :func:`ensure_demo_text_encoder` on the demo data, else ``None``.

    Args:
        data_root: the dataset folder.
        config: the BERT size, as in the bundle's ``text_encoder#config``.
        demo_data: whether the bundle runs on the demo data (booleans as typed on the command line); real data
            brings its own pretrained text encoder (``text_pretrained`` set to a hub id or folder).
        kwargs: :func:`ensure_demo_text_encoder`'s other arguments.
    """
    if not as_flag(demo_data, "demo_data"):
        return None
    return ensure_demo_text_encoder(data_root, config, **kwargs)
