"""Do the pretrained patch features know *where* a lesion is? An oracle probe scored on the counterfactual twins.

``python -m sista_monai.experiments patch_probe --bundle-root DIR [--split validation] [--layer encoder]``

The counterfactual game (:mod:`sista_monai.metrics.counterfactual`) asks whether a report word's most similar patch
follows its finding when only the image changes. When a model fails it, two things may be missing: the image
features may not say where the lesion is, or the words may not point along what they say. This experiment
separates the two. For each lesion class it fits a logistic probe on the frozen patch features of the *training*
split, each patch labelled by whether it overlaps that class's truth box — an **oracle** (it reads the boxes; it is
a diagnostic, never a result of the method) — and scores the probe by the counterfactual rule on the twins: its
highest-scoring patch must lie inside the finding's box in the original *and* inside the moved box in the twin.
The same probe on a randomly initialised encoder (``--random-init``) is the reference.

Features are standardised with the training patches' mean and standard deviation; the probe is an L2-regularised
logistic regression fitted with L-BFGS (torch only; a few thousand patches per class).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from sista_monai.metrics.grounding import patch_cells

__all__ = ["PatchProbe", "fit_patch_probes", "probe_follow", "main"]

logger = logging.getLogger(__name__)

PatchProbe = tuple[torch.Tensor, torch.Tensor]
"""A fitted probe: ``(weights (C,), bias ())`` on standardised features."""


def _fit_probe(x: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int) -> PatchProbe:
    """L2-regularised logistic regression of ``y (M,)`` on ``x (M, C)`` by L-BFGS."""
    weights = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros((), requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], max_iter=max_iter)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x @ weights + bias, y) + l2 * weights.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return weights.detach(), bias.detach()


def fit_patch_probes(
    features: torch.Tensor, cells: torch.Tensor, l2: float = 1e-3, max_iter: int = 200
) -> list[PatchProbe | None]:
    """One logistic probe per lesion class: does a patch overlap that class's box?

    Args:
        features: ``(N, P, C)`` standardised patch features of ``N`` training images.
        cells: ``(N, K, P)`` bool, the patches inside class ``k``'s truth of each image.
        l2: weight of the L2 penalty on the probe's weights.
        max_iter: L-BFGS iterations.

    Returns:
        ``K`` probes, fitted on the images that show the class; ``None`` for a class no training image shows.
    """
    probes: list[PatchProbe | None] = []
    for k in range(cells.shape[1]):
        shows = cells[:, k].any(dim=1)
        if not bool(shows.any()):
            probes.append(None)
            continue
        x = features[shows].reshape(-1, features.shape[-1]).float()
        probes.append(_fit_probe(x, cells[shows, k].reshape(-1).float(), l2, max_iter))
    return probes


def probe_follow(
    probes: Sequence[PatchProbe | None],
    original: torch.Tensor,
    twin: torch.Tensor,
    original_cells: torch.Tensor,
    twin_cells: torch.Tensor,
) -> tuple[list[bool], list[int]]:
    """The counterfactual rule for the probes: per (pair, class with a moved box), does the argmax follow?

    Args:
        probes: from :func:`fit_patch_probes`.
        original: ``(N, P, C)`` standardised patch features of the originals.
        twin: ``(N, P, C)`` those of the twins.
        original_cells: ``(N, K, P)`` the moved finding's box in each original (other classes empty).
        twin_cells: ``(N, K, P)`` its moved box in each twin.

    Returns:
        ``(follows, classes)``: one outcome and its class per pair and class that has a box and a probe.
    """
    follows: list[bool] = []
    classes: list[int] = []
    for n in range(original.shape[0]):
        for k, probe in enumerate(probes):
            if probe is None or not bool(original_cells[n, k].any()):
                continue
            weights, _ = probe
            first = int((original[n].float() @ weights).argmax())
            second = int((twin[n].float() @ weights).argmax())
            follows.append(bool(original_cells[n, k, first]) and bool(twin_cells[n, k, second]))
            classes.append(k)
    return follows, classes


def _features(network: Any, image: torch.Tensor, layer: str) -> torch.Tensor:
    encoded = network.image_encoder(image)
    if layer == "head":
        return network.image_local_head(encoded.patch_features)
    return encoded.patch_features


def _collect(
    network: Any, batches: Iterable[Mapping[str, Any]], keys: Sequence[tuple[str, str]], layer: str, grid: Any
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per ``(image key, mask key)``: the concatenated features and patch cells of every batch."""
    out: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = [([], []) for _ in keys]
    with torch.no_grad():
        for batch in batches:
            for (image_key, mask_key), (features, cells) in zip(keys, out, strict=True):
                features.append(_features(network, torch.as_tensor(batch[image_key]), layer))
                cells.append(patch_cells(torch.as_tensor(batch[mask_key]), grid, 0.0))
    return [(torch.cat(f), torch.cat(c)) for f, c in out]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sista_monai.experiments patch_probe", description=__doc__)
    parser.add_argument("--bundle-root", required=True, help="a trained pretraining bundle (its models/)")
    parser.add_argument("--config", default="bundles/pretrain/configs/train.json", help="the config it trained with")
    parser.add_argument("--split", default="validation", choices=("validation", "test"), help="whose twins")
    parser.add_argument("--layer", default="encoder", choices=("encoder", "head"), help="encoder or patch-head output")
    parser.add_argument("--random-init", action="store_true", help="probe a randomly initialised network instead")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="KEY=VALUE config overrides (JSON)")
    parser.add_argument("--out", help="write the result as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Fit the probes on the training split, score them on the twins, print (and write) the follow rate."""
    from monai.bundle import ConfigParser

    from sista_monai.experiments.ablation import _parse_overrides as parse_overrides
    from sista_monai.io import load_network_weights

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = ConfigParser()
    parser.read_config(args.config)
    for key, value in parse_overrides(args.overrides).items():
        parser[key] = value
    parser["output_dir"] = args.bundle_root
    parser["counterfactual#split"] = args.split
    network = parser.get_parsed_content("network")
    if not args.random_init:
        load_network_weights(Path(args.bundle_root) / "models" / "checkpoint_final.pt", network)
    network.eval()
    grid = network.image_encoder.patch_grid
    pairs = parser.get_parsed_content("counterfactual#dataloader")
    if pairs is None:
        raise SystemExit("no counterfactual twins in this data folder (the demo data has them)")
    [(train_features, train_cells)] = _collect(
        network, parser.get_parsed_content("prior#dataloader"), [("image", "lesion_mask")], args.layer, grid
    )
    mean, std = train_features.mean(dim=(0, 1)), train_features.std(dim=(0, 1)) + 1e-6
    probes = fit_patch_probes((train_features - mean) / std, train_cells)
    (original, original_cells), (twin, twin_cells) = _collect(
        network, pairs, [("image", "lesion_mask"), ("twin_image", "twin_lesion_mask")], args.layer, grid
    )
    follows, classes = probe_follow(probes, (original - mean) / std, (twin - mean) / std, original_cells, twin_cells)
    rate = sum(follows) / len(follows) if follows else float("nan")
    result = {
        "bundle_root": args.bundle_root,
        "split": args.split,
        "layer": args.layer,
        "random_init": args.random_init,
        "pairs": len(follows),
        "oracle_probe_follow_rate": rate,
        "per_class": {
            str(k): {
                "follows": sum(f for f, c in zip(follows, classes, strict=True) if c == k),
                "pairs": classes.count(k),
            }
            for k in sorted(set(classes))
        },
    }
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0
