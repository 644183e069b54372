"""``python -m sista_monai.bench gpu``: the paper-scale SISTA step against the CLIP-only step and the loss alone.

One training step of the paper's model (ViT-B/16 at 224 + a BERT-base text encoder at 112 tokens, batch 144,
bf16 autocast, AdamW): forward, report similarity, loss, backward, optimiser step. Three variants, alternated in
the same run on the same batch:

* ``sista``: SIA (false negatives eliminated, labels similarity) + STA (within-pair and cross-image terms, σ 0.5,
  4 stated finding words per report), as the pretraining bundle trains;
* ``clip``: the same model and step with the CLIP loss only (no flags, no token alignment): the baseline;
* ``loss``: SIA + STA forward and backward alone, on embeddings of the step's shapes (the method's own cost).

It prints images/s of both steps, their ratio, the share of the SISTA step spent in SIA + STA (``loss`` time /
``sista`` step time), the peak GPU memory of each step, with and without ``torch.compile`` of the model, and
whether the targets hold (≥ 1,500 images/s for the SISTA step on an H100/H200-class GPU, SIA + STA ≤ 10 % of the
step). ``--size tiny`` runs the same code with a tiny model on the CPU (the tests use it; its figures say nothing
about a GPU). On a machine without CUDA the paper size refuses to run rather than report CPU figures as GPU ones.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from sista_monai.losses import SemanticInstanceAlignmentLoss, SISTALoss, SparseTokenAlignmentLoss
from sista_monai.losses.similarity import finding_label_agreement
from sista_monai.networks import HuggingFaceTextEncoder, SISTAModel, ViTImageEncoder

__all__ = ["SIZES", "TARGETS", "main", "run"]

SIZES: dict[str, dict[str, Any]] = {
    "paper": {
        "img": 224,
        "vit": {"preset": "base"},
        "bert": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
        "tokens": 112,
        "batch": 144,
        "embed_dim": 128,
    },
    "tiny": {
        "img": 32,
        "vit": {"preset": "tiny", "hidden_size": 32, "mlp_dim": 64, "num_layers": 1, "num_heads": 2},
        "bert": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
        "tokens": 16,
        "batch": 8,
        "embed_dim": 16,
    },
}
"""Model and batch sizes; ``paper`` is the recipe of ``bundles/pretrain/configs/paper.json``."""

TARGETS = {"sista_images_per_s": 1500.0, "loss_share_max": 0.10}
"""On an H100/H200-class GPU: the paper's 50 epochs of MIMIC-CXR (≈ 18.9 M images) in ≤ 4 h; SIA + STA ≤ 10 %."""


def _model(spec: dict[str, Any], device: torch.device) -> SISTAModel:
    return SISTAModel(
        ViTImageEncoder(img_size=spec["img"], patch_size=16, **spec["vit"]),
        HuggingFaceTextEncoder(config={"vocab_size": 30522, "max_position_embeddings": 512, **spec["bert"]}),
        embed_dim=spec["embed_dim"],
    ).to(device)


CONTENT_WORDS = 4
"""Stated finding words per report in the benchmark batch (the cross-image term's K)."""


def _batch(spec: dict[str, Any], batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    tokens = spec["tokens"]
    mask = torch.ones(batch_size, tokens, dtype=torch.long)
    mask[:, (3 * tokens) // 4 :] = 0
    batch = {
        "image": torch.randn(batch_size, 1, spec["img"], spec["img"], generator=generator),
        "input_ids": torch.randint(5, 30000, (batch_size, tokens), generator=generator) * mask,
        "attention_mask": mask,
        "word_mask": mask.bool(),
        "labels": (torch.rand(batch_size, 14, generator=generator) > 0.8).float(),
    }
    # STA's cross-image term: CONTENT_WORDS stated findings per report (a class of 14, a side), at random word positions
    content = torch.full((batch_size, tokens), -1, dtype=torch.long)
    positions = torch.rand(batch_size, (3 * tokens) // 4, generator=generator).argsort(dim=1)[:, :CONTENT_WORDS]
    content.scatter_(1, positions, torch.randint(0, 14, (batch_size, CONTENT_WORDS), generator=generator))
    batch["content_words"] = content
    batch["content_sides"] = torch.randint(0, 3, (batch_size, tokens), generator=generator) * (content >= 0)
    return {k: v.to(device) for k, v in batch.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(model: torch.nn.Module, loss_fn: SISTALoss, optimiser: torch.optim.Optimizer, batch: dict, amp: Any) -> None:
    optimiser.zero_grad(set_to_none=True)
    with amp():
        out = model(batch["image"], batch["input_ids"], batch["attention_mask"], batch["word_mask"])
    labels = batch["labels"]
    similarity = (
        torch.nn.functional.normalize(labels, dim=1, eps=1e-6)
        @ torch.nn.functional.normalize(labels, dim=1, eps=1e-6).T
    )
    terms = loss_fn(
        image_emb=out.image_emb.float(),
        text_emb=out.text_emb.float(),
        report_sim=similarity,
        patch_emb=out.patch_emb.float(),
        token_emb=out.token_emb.float(),
        token_mask=out.token_mask,
        label_agreement=finding_label_agreement(labels),
        content_words=batch["content_words"],
        content_sides=batch["content_sides"],
    )
    terms["loss"].backward()
    optimiser.step()


def _time(block: Callable[[], None], device: torch.device, iterations: int) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        block()
    _sync(device)
    return (time.perf_counter() - start) / iterations


def _peak(device: torch.device, block: Callable[[], None]) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    block()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def _measure(
    spec: dict[str, Any],
    dev: torch.device,
    batch: dict[str, torch.Tensor],
    amp: Callable[[], Any],
    losses: tuple[SISTALoss, SISTALoss],
    compiled: bool,
    iterations: int,
    rounds: int,
    warmup: int,
) -> dict[str, Any]:
    """The three variants on one freshly built model, eager or compiled; medians over alternated rounds."""
    sista_loss, clip_loss = losses
    batch_size = batch["image"].shape[0]
    torch.manual_seed(0)
    model = _model(spec, dev)
    runner: torch.nn.Module = torch.compile(model) if compiled else model  # type: ignore[assignment]
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.05)
    with torch.no_grad(), amp():
        probe = model(batch["image"], batch["input_ids"], batch["attention_mask"], batch["word_mask"])
    generator = torch.Generator(device="cpu").manual_seed(1)
    embeddings = {
        k: torch.randn(getattr(probe, k).shape, generator=generator).to(dev).requires_grad_()
        for k in ("image_emb", "text_emb", "patch_emb", "token_emb")
    }
    similarity = torch.rand(batch_size, batch_size, generator=generator).to(dev)

    def sista() -> None:
        _step(runner, sista_loss, optimiser, batch, amp)

    def clip() -> None:
        _step(runner, clip_loss, optimiser, batch, amp)

    def loss_alone() -> None:
        terms = sista_loss(
            report_sim=similarity,
            token_mask=probe.token_mask,
            content_words=batch["content_words"],
            content_sides=batch["content_sides"],
            **embeddings,
        )
        terms["loss"].backward()

    blocks = {"sista": sista, "clip": clip, "loss": loss_alone}
    for block in blocks.values():  # warm-up (and compilation)
        for _ in range(warmup):
            block()
    seconds: dict[str, list[float]] = {name: [] for name in blocks}
    for _ in range(rounds):  # alternated, so that drift of the machine hits all three alike
        for name, block in blocks.items():
            seconds[name].append(_time(block, dev, iterations))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "sista_s_per_step": median["sista"],
        "clip_s_per_step": median["clip"],
        "loss_s": median["loss"],
        "sista_images_per_s": batch_size / median["sista"],
        "clip_images_per_s": batch_size / median["clip"],
        "sista_over_clip": median["sista"] / median["clip"],
        "loss_share_of_sista_step": median["loss"] / median["sista"],
        "peak_gib": {name: _peak(dev, block) for name, block in blocks.items()},
    }


def run(
    size: str = "paper",
    device: str | None = None,
    batch_size: int | None = None,
    iterations: int = 10,
    rounds: int = 3,
    warmup: int = 2,
    compile_modes: tuple[bool, ...] = (False, True),
) -> dict[str, Any]:
    """Measure the three variants; returns the figures (see the module docstring).

    Raises:
        RuntimeError: ``size="paper"`` without a CUDA device.
    """
    spec = SIZES[size]
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if size == "paper" and dev.type != "cuda":
        raise RuntimeError("the paper-size GPU benchmark needs a CUDA device; use --size tiny on a CPU")
    batch_size = int(batch_size or spec["batch"])
    batch = _batch(spec, batch_size, dev)
    dtype = torch.bfloat16

    def amp() -> Any:
        return torch.autocast(dev.type, dtype=dtype)

    sista_loss = SISTALoss(
        SemanticInstanceAlignmentLoss(threshold=0.75, gather_distributed=False),
        SparseTokenAlignmentLoss(sparsity_threshold=0.5, contrast="both"),
    )
    clip_loss = SISTALoss(SemanticInstanceAlignmentLoss(threshold=2.0, gather_distributed=False), lambda_token=0.0)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "size": size,
        "batch_size": batch_size,
        "autocast": str(dtype).replace("torch.", ""),
        "iterations": iterations,
        "rounds": rounds,
        "torch": torch.__version__,
        "modes": {},
    }
    for compiled in compile_modes:
        mode = _measure(spec, dev, batch, amp, (sista_loss, clip_loss), compiled, iterations, rounds, warmup)
        if size == "paper":
            mode["targets_met"] = {
                "sista_images_per_s": mode["sista_images_per_s"] >= TARGETS["sista_images_per_s"],
                "loss_share_max": mode["loss_share_of_sista_step"] <= TARGETS["loss_share_max"],
            }
        result["modes"]["compiled" if compiled else "eager"] = mode
    return result


def _table(result: dict[str, Any]) -> str:
    lines = [
        f"device {result['device']}, size {result['size']}, batch {result['batch_size']}, {result['autocast']} autocast, "
        f"median of {result['rounds']} rounds x {result['iterations']} steps",
        f"{'mode':9s} {'SISTA img/s':>12s} {'CLIP img/s':>11s} {'SISTA/CLIP':>10s} {'SIA+STA share':>13s} {'peak GiB (sista/clip/loss)':>28s}",
    ]
    for name, mode in result["modes"].items():
        peaks = "/".join("n/a" if v is None else f"{v:.1f}" for v in mode["peak_gib"].values())
        lines.append(
            f"{name:9s} {mode['sista_images_per_s']:12.1f} {mode['clip_images_per_s']:11.1f} {mode['sista_over_clip']:10.3f} "
            f"{mode['loss_share_of_sista_step']:13.3f} {peaks:>28s}"
        )
    if result["size"] == "paper":
        lines.append(
            f"targets: >= {TARGETS['sista_images_per_s']:.0f} img/s, SIA+STA <= {TARGETS['loss_share_max']:.0%} of the step"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table, or JSON with ``--json``."""
    parser = argparse.ArgumentParser(prog="python -m sista_monai.bench gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="paper")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu (tiny only)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", choices=("off", "on", "both"), default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.compile]
    try:
        result = run(args.size, args.device, args.batch_size, args.iterations, args.rounds, args.warmup, modes)
    except RuntimeError as err:
        sys.stderr.write(f"{err}\n")
        return 2
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.write((json.dumps(result, indent=2) if args.json else _table(result)) + "\n")
    return 0
