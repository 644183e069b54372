"""``python -m sista_monai.bench step``: the cost of running SISTA through MONAI's engine.

One :class:`~sista_monai.engines.SISTATrainer` iteration (Ignite engine, MONAI events, batch preparation,
report similarity, loss terms, clipping, optimiser and scheduler steps, output bookkeeping) against a
hand-written PyTorch loop doing the same work on the same model and the same batch, alternated in the same
run. Target: overhead ≤ 5 %.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from typing import Any

import torch

from sista_monai.engines import SISTATrainer
from sista_monai.losses import ReportSimilarity, SemanticInstanceAlignmentLoss, SISTALoss, SparseTokenAlignmentLoss
from sista_monai.losses.similarity import finding_label_agreement
from sista_monai.networks import HuggingFaceTextEncoder, SISTAModel, ViTImageEncoder

__all__ = ["main"]

SIZES = {
    "demo": {
        "img": 128,
        "vit": {"preset": "tiny", "hidden_size": 96, "mlp_dim": 192, "num_layers": 3, "num_heads": 4},
        "bert": {"hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 192},
    },
    "paper": {"img": 224, "vit": {"preset": "base"}, "bert": {}},
}


def _setup(size: str, batch_size: int, seed: int = 0) -> tuple[SISTAModel, dict[str, torch.Tensor], SISTALoss]:
    torch.manual_seed(seed)
    spec = SIZES[size]
    model = SISTAModel(
        ViTImageEncoder(img_size=spec["img"], patch_size=16, **spec["vit"]),
        HuggingFaceTextEncoder(config={"vocab_size": 2000, "max_position_embeddings": 128, **spec["bert"]}),
        embed_dim=128,
    )
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 2000, (batch_size, 112), generator=generator)
    mask = torch.ones(batch_size, 112, dtype=torch.long)
    mask[:, 80:] = 0
    batch = {
        "image": torch.randn(batch_size, 1, spec["img"], spec["img"], generator=generator),
        "input_ids": ids,
        "attention_mask": mask,
        "word_mask": mask.bool(),
        "labels": (torch.rand(batch_size, 6, generator=generator) > 0.7).float(),
    }
    loss = SISTALoss(SemanticInstanceAlignmentLoss(threshold=0.95), SparseTokenAlignmentLoss())
    return model, batch, loss


def _optimiser(model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.05)
    return optimiser, torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0)


def _manual_step(model, batch, loss_fn, similarity, optimiser, scheduler) -> float:
    model.train()
    optimiser.zero_grad(set_to_none=True)
    out = model(batch["image"], batch["input_ids"], batch["attention_mask"], batch["word_mask"])
    terms = loss_fn(
        image_emb=out.image_emb,
        text_emb=out.text_emb,
        report_sim=similarity(batch["labels"]),
        patch_emb=out.patch_emb,
        token_emb=out.token_emb,
        token_mask=out.token_mask,
        label_agreement=finding_label_agreement(batch["labels"]),
    )
    terms["loss"].backward()
    torch.nn.utils.clip_grad_norm_([p for g in optimiser.param_groups for p in g["params"]], 1.0)
    optimiser.step()
    scheduler.step()
    return float(terms["loss"].detach())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table, or JSON with ``--json``."""
    parser = argparse.ArgumentParser(prog="python -m sista_monai.bench step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="demo", help="encoder sizes (paper: ViT-B/16 + BERT-base)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=10, help="iterations per timed block")
    parser.add_argument("--rounds", type=int, default=5, help="alternating blocks of each (median reported)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, batch, loss_fn = _setup(args.size, args.batch_size)
    manual_model = copy.deepcopy(model)
    similarity = ReportSimilarity("labels")
    manual_optimiser, manual_scheduler = _optimiser(manual_model)
    optimiser, scheduler = _optimiser(model)
    trainer = SISTATrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[batch] * args.iterations,
        epoch_length=args.iterations,
        network=model,
        optimizer=optimiser,
        loss_function=loss_fn,
        report_similarity=similarity,
        scheduler=scheduler,
        grad_clip_norm=1.0,
        optim_set_to_none=True,
    )
    trainer.logger.setLevel("WARNING")

    blocks = {"engine": 0, "manual": 0}

    def seed(kind: str) -> None:
        """The k-th block of either loop draws the same dropout masks: both do the same work."""
        torch.manual_seed(blocks[kind])
        blocks[kind] += 1

    def engine_block() -> float:
        trainer.state.max_epochs = None  # let Ignite start a fresh run of one epoch
        seed("engine")
        start = time.perf_counter()
        trainer.run()
        return (time.perf_counter() - start) / args.iterations

    def manual_block() -> float:
        seed("manual")
        start = time.perf_counter()
        for _ in range(args.iterations):
            _manual_step(manual_model, batch, loss_fn, similarity, manual_optimiser, manual_scheduler)
        return (time.perf_counter() - start) / args.iterations

    engine_block(), manual_block()  # warm-up
    engine_times, manual_times = [], []
    for _ in range(args.rounds):
        engine_times.append(engine_block())
        manual_times.append(manual_block())
    engine_s, manual_s = statistics.median(engine_times), statistics.median(manual_times)
    result = {
        "size": args.size,
        "batch_size": args.batch_size,
        "iterations": args.iterations * args.rounds,
        "manual_loop_s_per_iteration": manual_s,
        "sista_trainer_s_per_iteration": engine_s,
        "overhead": engine_s / manual_s - 1.0,
        # both loops took the same number of steps on the same batch from the same weights: equal work
        "max_parameter_difference": max(
            float((a - b).abs().max()) for a, b in zip(model.parameters(), manual_model.parameters(), strict=True)
        ),
    }
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(
            f"{args.size} encoders, batch {args.batch_size}: hand-written loop {1e3 * manual_s:.1f} ms/it, "
            f"SISTATrainer {1e3 * engine_s:.1f} ms/it, overhead {100 * result['overhead']:+.1f} % (target <= 5 %)\n"
        )
    return 0
