"""Benchmark of the SISTA losses: batched implementation against loop references run alongside.

``python -m sista_monai.bench loss [--json]`` measures, for several batch sizes at the paper's sizes
(P = 196 patches, T = 112 tokens, D = 128):

- forward+backward time (median of ``--repeats``) and peak memory of SIA+STA (:class:`SISTALoss`) against two
  references of the same maths written here with Python loops: ``loop`` iterates over samples and, inside STA,
  over words (how earlier implementations were written, METHOD.md §6); ``sample_loop`` iterates over samples
  only (words batched inside a sample), a stricter baseline;
- STA alone versus B, to show linear growth;
- STA's cross-image term (``contrast="cross"``, ``--content-words`` K per report, chunked over
  ``--image-chunk-size`` images and checkpointed) versus B, measured in the same run right after the within-pair
  term at the same B and reported as time and memory ratios to it (its cost grows as B^2 * K * P * D);
- the loss time as a fraction of an image+text encoder forward+backward at B = 32, for a tiny pair and for the
  paper-size pair (MONAI ViT-B/16 at 224 + BERT-base at T = 112, random weights).

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA; on CPU it is the peak of the running sum of the
allocations and frees that ``torch.profiler`` records (``profile_memory=True``) during forward+backward,
i.e. the extra bytes held by tensors on top of the inputs. Each memory figure comes from a separate,
untimed run.

On CPU the benchmark uses one intra-op thread unless ``--threads`` says otherwise: the loop references are
dominated by per-op overhead, and thread wake-ups on shared cores make multi-threaded timings erratic. Every
measurement of a run uses the same thread count.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.nn import functional as F

from sista_monai.losses import ReportSimilarity, SemanticInstanceAlignmentLoss, SISTALoss, SparseTokenAlignmentLoss

__all__ = ["main", "loop_reference_loss", "sample_loop_reference_loss", "peak_memory_bytes"]

logger = logging.getLogger(__name__)

THRESHOLD = 0.9
FINDING_CLASSES = 14  # CheXpert's observations
SIA_TEMPERATURE = 0.07
TOKEN_TEMPERATURE = 0.1
EPS = 1e-6


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_inputs(
    batch: int, patches: int, tokens: int, dim: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random L2-normalised embeddings with report lengths between 16 and ``tokens`` and near-duplicate reports."""
    generator = torch.Generator().manual_seed(seed)

    def unit(*shape: int) -> torch.Tensor:
        return F.normalize(torch.randn(*shape, generator=generator), dim=-1).to(device)

    lengths = torch.randint(min(16, tokens), tokens + 1, (batch,), generator=generator)
    token_mask = (torch.arange(tokens)[None, :] < lengths[:, None]).to(device)
    text_emb = unit(batch, dim)
    # a fifth of the reports are near-copies of report 0 ("no acute cardiopulmonary process"): flagged pairs
    frozen = torch.randn(batch, 32, generator=generator)
    frozen[: max(2, batch // 5)] = frozen[0] + 0.05 * torch.randn(max(2, batch // 5), 32, generator=generator)
    return {
        "image_emb": unit(batch, dim).requires_grad_(),
        "text_emb": text_emb.requires_grad_(),
        "report_sim": ReportSimilarity("text_frozen")(frozen.to(device)),
        "patch_emb": unit(batch, patches, dim).requires_grad_(),
        "token_emb": unit(batch, tokens, dim).requires_grad_(),
        "token_mask": token_mask,
    }


def make_content_words(
    token_mask: torch.Tensor, per_report: int, classes: int = FINDING_CLASSES, seed: int = 1
) -> dict[str, torch.Tensor]:
    """``per_report`` content words at random valid positions of each report, random classes and sides.

    Args:
        token_mask: ``(B, T)`` validity of the tokens; every report must hold at least ``per_report`` valid tokens.
        per_report: content words per report (``K``).
        classes: number of finding classes drawn from.
        seed: seed of the draw.

    Returns:
        ``"content_words"`` (``(B, T)`` class or ``-1``) and ``"content_sides"`` (``(B, T)`` in 0, 1, 2).
    """
    generator = torch.Generator().manual_seed(seed)
    mask = token_mask.cpu()
    batch, tokens = mask.shape
    priority = torch.rand(batch, tokens, generator=generator).masked_fill(~mask, -1.0)
    positions = priority.topk(per_report, dim=1).indices
    content_words = torch.full((batch, tokens), -1, dtype=torch.long)
    content_sides = torch.zeros(batch, tokens, dtype=torch.long)
    content_words.scatter_(1, positions, torch.randint(0, classes, (batch, per_report), generator=generator))
    content_sides.scatter_(1, positions, torch.randint(0, 3, (batch, per_report), generator=generator))
    return {
        "content_words": content_words.to(token_mask.device),
        "content_sides": content_sides.to(token_mask.device),
    }


def _loop_sia(image_emb: torch.Tensor, text_emb: torch.Tensor, report_sim: torch.Tensor) -> torch.Tensor:
    """SIA (``eliminate``) one anchor at a time, in both directions."""
    batch = image_emb.shape[0]
    terms = []
    for anchors, others in ((image_emb, text_emb), (text_emb, image_emb)):
        for i in range(batch):
            keep = report_sim[i] < THRESHOLD
            keep[i] = True
            logits = others[keep] @ anchors[i] / SIA_TEMPERATURE
            position = int(keep[:i].sum())
            terms.append(torch.logsumexp(logits, 0) - logits[position])
    return 0.5 * (torch.stack(terms[:batch]).mean() + torch.stack(terms[batch:]).mean())


def _sample_token_loss(grouped: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    logits = grouped @ words.T / TOKEN_TEMPERATURE
    targets = torch.arange(len(words), device=words.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def _word_weights(similarity: torch.Tensor, sigma: float) -> torch.Tensor:
    normalised = (similarity - similarity.min()) / (similarity.max() - similarity.min() + EPS)
    kept = torch.where(normalised >= sigma, normalised, torch.zeros_like(normalised))
    total = kept.sum()
    if total > 0:
        return kept / total
    return torch.full_like(kept, 1.0 / len(kept))


def loop_reference_loss(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """SIA+STA with Python loops over samples (SIA anchors; STA samples and, inside each sample, words)."""
    patch_emb, token_emb, token_mask = inputs["patch_emb"], inputs["token_emb"], inputs["token_mask"]
    sigma = 1.0 / patch_emb.shape[1]
    sample_losses = []
    for b in range(patch_emb.shape[0]):
        words = token_emb[b][token_mask[b]]
        if len(words) == 0:
            continue
        grouped = []
        for word in words:
            weights = _word_weights(patch_emb[b] @ word, sigma)
            grouped.append(F.normalize(weights @ patch_emb[b], dim=0))
        sample_losses.append(_sample_token_loss(torch.stack(grouped), words))
    sia = _loop_sia(inputs["image_emb"], inputs["text_emb"], inputs["report_sim"])
    return sia + torch.stack(sample_losses).mean()


def sample_loop_reference_loss(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """SIA+STA with a Python loop over samples only (words batched inside each sample)."""
    patch_emb, token_emb, token_mask = inputs["patch_emb"], inputs["token_emb"], inputs["token_mask"]
    num_patches = patch_emb.shape[1]
    sample_losses = []
    for b in range(patch_emb.shape[0]):
        words = token_emb[b][token_mask[b]]
        if len(words) == 0:
            continue
        similarity = words @ patch_emb[b].T
        low = similarity.amin(dim=1, keepdim=True)
        high = similarity.amax(dim=1, keepdim=True)
        normalised = (similarity - low) / (high - low + EPS)
        kept = normalised * (normalised >= 1.0 / num_patches)
        total = kept.sum(dim=1, keepdim=True)
        weights = torch.where(total > 0, kept / torch.where(total > 0, total, 1.0), 1.0 / num_patches)
        grouped = F.normalize(weights @ patch_emb[b], dim=1)
        sample_losses.append(_sample_token_loss(grouped, words))
    sia = _loop_sia(inputs["image_emb"], inputs["text_emb"], inputs["report_sim"])
    return sia + torch.stack(sample_losses).mean()


def _batched_loss(sista: SISTALoss) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    return lambda inputs: sista(**inputs)["loss"]


def _sta_only(sta: SparseTokenAlignmentLoss) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    return lambda inputs: sta(inputs["patch_emb"], inputs["token_emb"], inputs["token_mask"])["loss"]


def _sta_cross_only(sta: SparseTokenAlignmentLoss) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    return lambda inputs: sta(
        inputs["patch_emb"],
        inputs["token_emb"],
        inputs["token_mask"],
        content_words=inputs["content_words"],
        content_sides=inputs["content_sides"],
    )["loss"]


def _clear_grads(inputs: dict[str, torch.Tensor]) -> None:
    for value in inputs.values():
        value.grad = None


def _step(fn: Callable[[dict[str, torch.Tensor]], torch.Tensor], inputs: dict[str, torch.Tensor]) -> None:
    _clear_grads(inputs)
    fn(inputs).backward()


def time_step(
    fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    inputs: dict[str, torch.Tensor],
    repeats: int,
    device: torch.device,
    warmup: int = 1,
) -> tuple[float, float]:
    """Median and minimum seconds of ``repeats`` forward+backward runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        _step(fn, inputs)
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        _step(fn, inputs)
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def peak_memory_bytes(
    fn: Callable[[dict[str, torch.Tensor]], torch.Tensor], inputs: dict[str, torch.Tensor], device: torch.device
) -> int:
    """Extra bytes held at the peak of one forward+backward (see the module docstring for how)."""
    _clear_grads(inputs)
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        _step(fn, inputs)
        _synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(fn, inputs)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return int(peak)


def _encoder_step_seconds(size: str, batch: int, tokens: int, device: torch.device, repeats: int) -> float:
    from monai.networks.nets import ViT
    from transformers import BertConfig, BertModel

    if size == "paper":
        image_size = 224
        vit = ViT(
            in_channels=1,
            img_size=(224, 224),
            patch_size=(16, 16),
            spatial_dims=2,
            hidden_size=768,
            mlp_dim=3072,
            num_layers=12,
            num_heads=12,
        )
        bert = BertModel(BertConfig())
    else:
        image_size = 64
        vit = ViT(
            in_channels=1,
            img_size=(64, 64),
            patch_size=(8, 8),
            spatial_dims=2,
            hidden_size=64,
            mlp_dim=256,
            num_layers=2,
            num_heads=4,
        )
        bert = BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256))
    vit, bert = vit.to(device).train(), bert.to(device).train()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 1, image_size, image_size, generator=generator).to(device)
    input_ids = torch.randint(1000, 2000, (batch, tokens), generator=generator).to(device)
    attention_mask = torch.ones(batch, tokens, dtype=torch.long, device=device)

    def step() -> None:
        vit.zero_grad(set_to_none=True)
        bert.zero_grad(set_to_none=True)
        image_features, _ = vit(images)
        text_features = bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        (image_features.mean() + text_features.mean()).backward()

    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure everything; returns a JSON-serialisable dict."""
    device = torch.device(args.device)
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else torch.get_num_threads())
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    sista = SISTALoss(
        SemanticInstanceAlignmentLoss(THRESHOLD, mode="eliminate", temperature=SIA_TEMPERATURE),
        SparseTokenAlignmentLoss(temperature=TOKEN_TEMPERATURE, eps=EPS),
    ).to(device)
    batched, sta_only = _batched_loss(sista), _sta_only(sista.sta)
    cross_sta = SparseTokenAlignmentLoss(
        temperature=TOKEN_TEMPERATURE, eps=EPS, contrast="cross", image_chunk_size=args.image_chunk_size
    ).to(device)
    cross_only = _sta_cross_only(cross_sta)
    reference_repeats = max(1, min(args.repeats, args.reference_repeats))
    rows = []
    cross_rows = []
    for batch in args.batch_sizes:
        inputs = make_inputs(batch, args.patches, args.tokens, args.dim, device)
        run_word_loop = batch <= args.loop_max_batch
        with torch.no_grad():
            value = batched(inputs).item()
            references = [sample_loop_reference_loss(inputs).item()]
            if run_word_loop:
                references.append(loop_reference_loss(inputs).item())
        row: dict[str, Any] = {
            "batch": batch,
            "loss": value,
            "max_abs_diff_vs_references": max(abs(value - reference) for reference in references),
            "flagged_pairs": int(((inputs["report_sim"] >= THRESHOLD).sum() - batch).item()),
        }
        row["batched_s"], row["batched_min_s"] = time_step(batched, inputs, args.repeats, device)
        row["sample_loop_s"], row["sample_loop_min_s"] = time_step(
            sample_loop_reference_loss, inputs, args.repeats, device, warmup=0
        )
        row["sta_s"], row["sta_min_s"] = time_step(sta_only, inputs, args.repeats, device)
        row["speedup_vs_sample_loop"] = row["sample_loop_s"] / row["batched_s"]
        if run_word_loop:
            row["loop_s"], _ = time_step(loop_reference_loss, inputs, reference_repeats, device, warmup=0)
            row["speedup_vs_loop"] = row["loop_s"] / row["batched_s"]
        if not args.skip_memory:
            row["batched_peak_bytes"] = peak_memory_bytes(batched, inputs, device)
            row["sample_loop_peak_bytes"] = peak_memory_bytes(sample_loop_reference_loss, inputs, device)
            row["sta_peak_bytes"] = peak_memory_bytes(sta_only, inputs, device)
        row["btp_tensor_bytes"] = batch * args.tokens * args.patches * 4
        rows.append(row)
        if args.content_words > 0:
            cross_rows.append(_cross_row(cross_only, inputs, row, args, device))
        logger.info("B=%d done", batch)

    first = rows[0]
    for row in rows:
        growth = row["batch"] / first["batch"]
        row["sta_time_growth_over_batch_growth"] = row["sta_min_s"] / first["sta_min_s"] / growth
        if "sta_peak_bytes" in row:
            row["sta_memory_growth_over_batch_growth"] = row["sta_peak_bytes"] / first["sta_peak_bytes"] / growth

    result: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "sizes": {"patches": args.patches, "tokens": args.tokens, "dim": args.dim},
        "repeats": args.repeats,
        "reference_repeats": reference_repeats,
        "memory_not_measured_for": "the sample+word loop (profiling its thousands of small ops is too slow)",
        "loop_max_batch": args.loop_max_batch,
        "sta_growth_from": "minimum times (least disturbed by other processes)",
        "memory_method": (
            None
            if args.skip_memory
            else "torch.cuda.max_memory_allocated"
            if device.type == "cuda"
            else "torch.profiler CPU allocation events (peak of allocated minus freed during forward+backward)"
        ),
        "rows": rows,
    }
    if args.content_words > 0:
        result["sta_cross"] = {
            "content_words_per_report": args.content_words,
            "finding_classes": FINDING_CLASSES,
            "image_chunk_size": args.image_chunk_size,
            "checkpoint_chunks": cross_sta.checkpoint_chunks,
            "ratios_from": "minimum times; peak memory of separate untimed runs",
            "rows": cross_rows,
        }
    if not args.skip_encoders:
        encoder_batch = args.encoder_batch
        loss_inputs = make_inputs(encoder_batch, args.patches, args.tokens, args.dim, device)
        loss_seconds, _ = time_step(batched, loss_inputs, args.repeats, device)
        encoders = {"batch": encoder_batch, "loss_s": loss_seconds}
        for size in args.encoders:
            repeats = 1 if size == "paper" else args.repeats
            seconds = _encoder_step_seconds(size, encoder_batch, args.tokens, device, repeats)
            encoders[f"{size}_encoders_s"] = seconds
            encoders[f"{size}_loss_fraction"] = loss_seconds / seconds
        result["encoders"] = encoders
    return result


def _cross_row(
    cross_only: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    inputs: dict[str, torch.Tensor],
    row: dict[str, Any],
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """The cross-image term at ``row``'s batch size, beside the within-pair term measured just before."""
    cross_inputs = {**inputs, **make_content_words(inputs["token_mask"], args.content_words)}
    with torch.no_grad():
        value = cross_only(cross_inputs).item()
    cross: dict[str, Any] = {
        "batch": row["batch"],
        "content_words": int((cross_inputs["content_words"] >= 0).sum().item()),
        "loss": value,
    }
    cross["cross_s"], cross["cross_min_s"] = time_step(cross_only, cross_inputs, args.repeats, device)
    cross["within_s"], cross["within_min_s"] = row["sta_s"], row["sta_min_s"]
    cross["time_ratio_to_within"] = cross["cross_min_s"] / row["sta_min_s"]
    if "sta_peak_bytes" in row:
        cross["cross_peak_bytes"] = peak_memory_bytes(cross_only, cross_inputs, device)
        cross["within_peak_bytes"] = row["sta_peak_bytes"]
        cross["memory_ratio_to_within"] = cross["cross_peak_bytes"] / max(row["sta_peak_bytes"], 1)
    return cross


def format_table(result: dict[str, Any]) -> str:
    """Human-readable report of :func:`run`'s result."""
    mib = 2**20
    lines = [
        f"SISTA loss benchmark on {result['device']} ({result['threads']} threads), P={result['sizes']['patches']} "
        f"T={result['sizes']['tokens']} D={result['sizes']['dim']}; times are medians of {result['repeats']} "
        f"(sample+word loop: {result['reference_repeats']}) forward+backward runs",
        f"memory: {result['memory_method'] or 'not measured'}",
        "",
        f"{'B':>5} {'batched s':>10} {'loop s':>9} {'x loop':>7} {'smp-loop s':>10} {'x smp':>6} "
        f"{'STA s':>8} {'STA t/B':>8} {'MiB':>8} {'smp MiB':>8} {'STA MiB':>8} {'STA m/B':>8} {'|diff|':>8}",
    ]
    for row in result["rows"]:
        memory = [
            f"{row[key] / mib:8.1f}" if key in row else f"{'-':>8}"
            for key in ("batched_peak_bytes", "sample_loop_peak_bytes", "sta_peak_bytes")
        ]
        loop = f"{row['loop_s']:9.3f} {row['speedup_vs_loop']:7.1f}" if "loop_s" in row else f"{'-':>9} {'-':>7}"
        memory_growth = row.get("sta_memory_growth_over_batch_growth")
        lines.append(
            f"{row['batch']:>5} {row['batched_s']:10.4f} {loop} "
            f"{row['sample_loop_s']:10.3f} {row['speedup_vs_sample_loop']:6.1f} {row['sta_min_s']:8.4f} "
            f"{row['sta_time_growth_over_batch_growth']:8.2f} {' '.join(memory)} "
            f"{'-' if memory_growth is None else f'{memory_growth:.2f}':>8} "
            f"{row['max_abs_diff_vs_references']:8.1e}"
        )
    lines.append(
        "x loop / x smp: speed-up (medians) over the sample+word loop (run up to B = "
        f"{result['loop_max_batch']}) / the sample loop; STA s: minimum time; STA t/B, STA m/B: growth of STA "
        "time / memory from the first batch size divided by the growth of B (1.0 = linear); MiB: batched SIA+STA, "
        "smp MiB: sample loop; |diff|: largest loss difference against the references"
    )
    if "sta_cross" in result:
        cross = result["sta_cross"]
        chunk = cross["image_chunk_size"] or "all"
        lines += [
            "",
            f"STA cross-image term (K={cross['content_words_per_report']} content words per report, {chunk} images "
            f"per chunk, checkpointed: {cross['checkpoint_chunks']}) vs the within-pair term at the same B",
            f"{'B':>5} {'words':>6} {'cross s':>9} {'within s':>9} {'x time':>7} {'cross MiB':>10} "
            f"{'within MiB':>10} {'x mem':>7} {'loss':>7}",
        ]
        for row in cross["rows"]:
            memory = (
                f"{row['cross_peak_bytes'] / mib:10.1f} {row['within_peak_bytes'] / mib:10.1f} "
                f"{row['memory_ratio_to_within']:7.2f}"
                if "cross_peak_bytes" in row
                else f"{'-':>10} {'-':>10} {'-':>7}"
            )
            lines.append(
                f"{row['batch']:>5} {row['content_words']:>6} {row['cross_min_s']:9.4f} {row['within_min_s']:9.4f} "
                f"{row['time_ratio_to_within']:7.2f} {memory} {row['loss']:7.3f}"
            )
        lines.append(
            "cross s / within s: minimum forward+backward times of the cross-image and within-pair terms alone; "
            "x time, x mem: cross-image term / within-pair term"
        )
    if "encoders" in result:
        enc = result["encoders"]
        lines.append("")
        lines.append(f"encoders forward+backward at B={enc['batch']}; SISTA loss step {enc['loss_s']:.4f} s")
        for size in ("tiny", "paper"):
            if f"{size}_encoders_s" in enc:
                lines.append(
                    f"  {size:>5}: {enc[f'{size}_encoders_s']:.3f} s, loss = {100 * enc[f'{size}_loss_fraction']:.1f} %"
                )
    return "\n".join(lines)


def _batch_sizes(text: str) -> list[int]:
    values = [int(part) for part in text.replace(",", " ").split()]
    if not values or any(v < 2 for v in values):
        raise argparse.ArgumentTypeError(f"batch sizes must be integers >= 2, got {text!r}")
    return values


def _chunk_size(text: str) -> int | None:
    if text.lower() in ("none", "all"):
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"the image chunk size must be a positive integer or 'none', got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sista_monai.bench loss", description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", type=_batch_sizes, default=[32, 64, 144, 256], help="e.g. 32,64,144,256")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument(
        "--reference-repeats", type=int, default=1, help="timed runs of the sample+word loop (at most --repeats)"
    )
    parser.add_argument(
        "--loop-max-batch", type=int, default=144, help="largest B at which the sample+word loop is run (it is slow)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default 1 on CPU: the loops are dominated by per-op overhead, which thread "
        "wake-ups on shared cores make erratic; the same count is used for every measurement)",
    )
    parser.add_argument("--patches", type=int, default=196)
    parser.add_argument("--tokens", type=int, default=112)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument(
        "--content-words",
        type=int,
        default=4,
        help="K, content words per report for the cross-image STA term (0 skips it; at most 16)",
    )
    parser.add_argument(
        "--image-chunk-size",
        type=_chunk_size,
        default=32,
        help="images scored at once by the cross-image STA term ('none': all of them)",
    )
    parser.add_argument("--skip-encoders", action="store_true", help="do not time the encoders")
    parser.add_argument("--skip-memory", action="store_true", help="do not measure peak memory")
    parser.add_argument(
        "--encoders", nargs="+", choices=("tiny", "paper"), default=["tiny", "paper"], help="encoder sizes to time"
    )
    parser.add_argument("--encoder-batch", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the loss benchmark; prints a table (or JSON with ``--json``) to stdout and returns 0."""
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    if args.repeats < 1:
        build_parser().error("--repeats must be >= 1")
    if not 0 <= args.content_words <= min(16, args.tokens):
        build_parser().error("--content-words must be between 0 and min(16, --tokens) (the shortest report length)")
    result = run(args)
    sys.stdout.write((json.dumps(result, indent=2) if args.json else format_table(result)) + "\n")
    rows = result["rows"] + result.get("sta_cross", {}).get("rows", [])
    return 0 if all(math.isfinite(row["loss"]) for row in rows) else 1
