"""How well does each report-similarity source find the studies whose reports say the same thing?

``python -m sista_monai.experiments report_similarity --reports DIR --out OUT [--part test]``

SIA removes an unpaired study from the negatives when its report similarity to the anchor's is at least θ. This
experiment scores every source against human truth on a folder of reports: the IU X-ray report XMLs (truth: the
indexers' MeSH major terms mapped onto the labeler's findings, :data:`~sista_monai.transforms.findings.MESH_MAP`)
or the demo data folder (truth: its finding labels). A pair of studies *should* be flagged when their truth finding
sets are equal (each IU report is one study of its own patient: IU X-ray gives no patient id). For each source it
writes ``flag_precision``, ``flag_recall`` and ``flag_rate`` over all pairs, and ``abnormal_flag_precision`` /
``abnormal_flag_recall`` over the pairs that are not normal–normal by truth (normal–normal pairs dominate), and for
the ``findings`` labeler its per-finding ``precision`` / ``recall`` / ``f1`` with its negation errors.

The θ of every source and the uncertain-mention value are fixed in the package (:data:`THETAS`, chosen on the
*validation* part of each dataset with ``--choose``, which prints the sweep and writes nothing): the command never
tunes on the folder it scores. Fitted parts (TF-IDF vocabulary and centre, the text encoders' centre, the IU text
encoder) use the folder's *training* part only.

Sources:

- ``findings``: the rule labeler's finding vectors (:mod:`sista_monai.transforms.findings`), cosine with a
  no-finding column (``ReportSimilarity("findings")``);
- ``tfidf``: centred TF-IDF cosine (word counts × smoothed IDF, L2-normalised, the training mean subtracted; the
  few lines of scikit-learn's ``TfidfVectorizer`` it needs are written here rather than adding the dependency);
- ``tfidf_negation``: the same with the words that a negation cue governs marked (``no effusion`` ≠ ``effusion``);
- ``text_frozen``: the demo's MLM-pretrained BERT (what the pretraining bundle's ``text_frozen`` source reads),
  mean-pooled and centred: on IU reports it is **out of domain** (trained on the demo's grammar);
- ``text_frozen_own`` (IU only): a BERT of the same size pretrained the same way on the IU *training* reports.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sista_monai.errors import SistaDataError
from sista_monai.io.files import write_json
from sista_monai.losses import ReportSimilarity
from sista_monai.metrics.sia_flags import flag_statistics
from sista_monai.transforms.findings import (
    FINDINGS,
    NEGATED,
    POSITIVE,
    UNCERTAIN,
    findings_vector,
    label_report,
    mesh_findings,
    negated_spans,
    split_sentences,
)

__all__ = ["DEMO_FINDINGS", "THETAS", "UNCERTAIN_VALUE", "ReportSet", "load_reports", "main"]

logger = logging.getLogger(__name__)

PARTS = ("training", "validation", "test")
SOURCES = ("findings", "tfidf", "tfidf_negation", "text_frozen", "text_frozen_own")

THETAS: dict[str, dict[str, float]] = {
    "demo": {"findings": 0.9, "tfidf": 0.12, "tfidf_negation": 0.12, "text_frozen": 0.56},
    "iu_xray": {"findings": 0.96, "tfidf": 0.02, "tfidf_negation": 0.02, "text_frozen": 0.08, "text_frozen_own": 0.14},
}
"""θ per dataset kind and source: the θ of highest flag F1 over all pairs of the validation part (``--choose``;
the lowest such θ on a grid of 0.02)."""

UNCERTAIN_VALUE = 0.5
"""The value of an uncertain mention in the ``findings`` vectors: of 0, 0.5 and 1, the one of highest validation
flag F1 on the demo (0.943, 0.975, 0.971) and tied best on the IU reports (0.911, 0.920, 0.920)."""

DEMO_FINDINGS = {
    "Lung Opacity": "lung_opacity",
    "Consolidation": "consolidation",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural_effusion",
    "Cardiomegaly": "cardiomegaly",
}
"""The demo's label names → the labeler's findings (``No Finding`` is the all-zero vector)."""

MIN_POSITIVES = 20
"""Findings with at least this many positive reports in the scored part enter the mean F1."""

TARGETS = {
    "demo": {"flag_precision": 0.95, "flag_recall": 0.9},
    "iu_xray": {"mean_f1": 0.85, "abnormal_flag_precision": 0.85, "abnormal_flag_recall": 0.7},
}
"""Issue 25's targets (test parts; never tuned on)."""


@dataclass
class ReportSet:
    """Reports with truth: ``ids``, ``texts`` (the sections the pipeline reads, cleaned), ``truth`` ``(N, F)``
    finding vectors over ``findings``, the ``part`` of every report, and what was left out (``excluded``)."""

    kind: str
    ids: list[str]
    texts: list[str]
    truth: torch.Tensor
    findings: tuple[str, ...]
    parts: list[str]
    excluded: dict[str, int] = field(default_factory=dict)

    def select(self, parts: Sequence[str]) -> ReportSet:
        keep = [i for i, p in enumerate(self.parts) if p in parts]
        return ReportSet(
            self.kind,
            [self.ids[i] for i in keep],
            [self.texts[i] for i in keep],
            self.truth[keep],
            self.findings,
            [self.parts[i] for i in keep],
            dict(self.excluded),
        )


def _load_iu(folder: Path) -> ReportSet:
    from sista_monai.data.sources.iu_xray import prepare_iu_xray

    with tempfile.TemporaryDirectory(prefix="iu_reports_") as tmp:
        prepare_iu_xray(folder, tmp, on_error="skip")
        datalist = json.loads(Path(tmp, "datalist_pretrain.json").read_text())
    ids, texts, truth, parts, unindexed = [], [], [], [], 0
    for part in PARTS:
        for item in datalist[part]:
            if any(term.strip().lower() == "no indexing" for term in item["mesh"]):
                unindexed += 1  # no human truth
                continue
            found = mesh_findings(item["mesh"])
            ids.append(item["id"])
            texts.append(item["report"])
            truth.append([float(f in found) for f in FINDINGS])
            parts.append(part)
    return ReportSet("iu_xray", ids, texts, torch.tensor(truth), FINDINGS, parts, {"no_indexing": unindexed})


def _load_demo(folder: Path) -> ReportSet:
    from sista_monai.transforms import CleanReport, ExtractReportSections

    datalist = json.loads((folder / "datalist_pretrain.json").read_text())
    names = datalist["label_names"]
    extract, clean = ExtractReportSections("mimic", ("impression", "findings")), CleanReport()
    ids, texts, truth, parts = [], [], [], []
    for part in PARTS:
        for item in datalist[part]:
            ids.append(item["id"])
            texts.append(clean(extract(item["report"], source=item["id"]), source=item["id"]))
            stated = {DEMO_FINDINGS[n] for n, v in zip(names, item["labels"], strict=True) if v and n in DEMO_FINDINGS}
            truth.append([float(f in stated) for f in FINDINGS])
            parts.append(part)
    return ReportSet("demo", ids, texts, torch.tensor(truth), FINDINGS, parts)


def load_reports(folder: str | Path) -> ReportSet:
    """The reports of ``folder`` with their truth: a demo data folder (``datalist_pretrain.json``) or a folder of
    IU X-ray report XMLs (searched recursively).

    Raises:
        FileNotFoundError: neither kind is found in ``folder``.
    """
    folder = Path(folder)
    if (folder / "datalist_pretrain.json").is_file():
        return _load_demo(folder)
    if folder.is_dir() and next(folder.rglob("*.xml"), None) is not None:
        return _load_iu(folder)
    raise FileNotFoundError(f"{folder}: neither a demo data folder (datalist_pretrain.json) nor IU report XMLs")


_TOKEN = re.compile(r"[a-z][a-z0-9]*")


def _tokens(text: str, mark_negation: bool) -> list[str]:
    words = []
    for sentence in split_sentences(text):
        spans = negated_spans(sentence) if mark_negation else []
        for match in _TOKEN.finditer(sentence):
            negated = any(s <= match.start() < e for s, e in spans)
            words.append(("neg_" if negated else "") + match.group())
    return words


def tfidf_features(train: Sequence[str], texts: Sequence[str], mark_negation: bool = False) -> torch.Tensor:
    """Centred TF-IDF vectors of ``texts`` (vocabulary, IDF and centre from ``train``; words seen in ≥ 2
    training reports; IDF ``log((1 + n) / (1 + df)) + 1`` as scikit-learn smooths it)."""
    train_tokens = [_tokens(t, mark_negation) for t in train]
    df = Counter(w for tokens in train_tokens for w in set(tokens))
    vocab = {w: i for i, w in enumerate(sorted(w for w, c in df.items() if c >= 2))}
    idf = torch.tensor([math.log((1 + len(train)) / (1 + df[w])) + 1 for w in vocab])

    def vectors(token_lists: Sequence[list[str]]) -> torch.Tensor:
        out = torch.zeros(len(token_lists), len(vocab))
        for row, tokens in enumerate(token_lists):
            for word, count in Counter(tokens).items():
                if word in vocab:
                    out[row, vocab[word]] = count
        out = out * idf
        return out / out.norm(dim=1, keepdim=True).clamp_min(1e-12)

    center = vectors(train_tokens).mean(0)
    return vectors([_tokens(t, mark_negation) for t in texts]) - center


def _encode(folder: str, tokenizer: str, texts: Sequence[str], max_length: int = 112) -> torch.Tensor:
    from sista_monai.networks import HuggingFaceTextEncoder
    from sista_monai.transforms import load_tokenizer

    tok = load_tokenizer(tokenizer, local_files_only=True)
    config = json.loads(Path(folder, "config.json").read_text())
    size = {k: config[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")}
    encoder = HuggingFaceTextEncoder(
        config={"model_type": "bert", "max_position_embeddings": config["max_position_embeddings"], **size},
        tokenizer=tok,
        pooling="mean",
        pretrained_weights=folder,
    ).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            batch = tok(
                list(texts[start : start + 64]),
                max_length=max_length,
                truncation=True,
                padding=True,
                return_tensors="pt",
            )
            out.append(encoder(batch["input_ids"], batch["attention_mask"]).global_features)
    return torch.cat(out)


PRETRAIN_CONFIG = "bundles/pretrain/configs/train.json"
"""The pretraining bundle's config, relative to the repository root (where the README's commands run): its
``text_encoder#config`` sizes the text encoders, as the bundle sizes its own."""


def _bundle_text_config(config_file: str | Path = PRETRAIN_CONFIG) -> dict[str, Any]:
    path = Path(config_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the pretraining bundle's train.json (run from the repository root)")
    return dict(json.loads(path.read_text())["text_encoder"]["config"])


def encoder_features(
    source: str, reports: ReportSet, train: ReportSet, demo_root: Path | None, work: Path
) -> torch.Tensor | str:
    """Centred, mean-pooled features of a frozen BERT, or the reason the source cannot run."""
    from sista_monai.data.demo_text import ensure_demo_text_encoder, train_mlm_text_encoder
    from sista_monai.data.tokenizer import train_wordpiece_tokenizer

    if source == "text_frozen":
        if demo_root is None or not (demo_root / "datalist_pretrain.json").is_file():
            return "the demo data folder (--demo-data) is missing: run the pretraining bundle once to generate it"
        folder = ensure_demo_text_encoder(demo_root, _bundle_text_config())
        tokenizer = str(demo_root / "tokenizer")
    else:
        if reports.kind == "demo":
            return "on the demo data the demo's own encoder is text_frozen"
        tokenizer = str(work / "tokenizer")
        folder = str(work / "text_encoder")
        if not Path(folder, "mlm.json").is_file():
            train_wordpiece_tokenizer(train.texts, tokenizer)
            train_mlm_text_encoder(train.texts, tokenizer, _bundle_text_config(), folder)
    center = _encode(folder, tokenizer, train.texts).mean(0)
    return _encode(folder, tokenizer, reports.texts) - center


def findings_features(texts: Sequence[str], uncertain: float = UNCERTAIN_VALUE) -> torch.Tensor:
    return torch.stack([findings_vector(label_report(t), uncertain) for t in texts])


def source_features(
    source: str, reports: ReportSet, train: ReportSet, demo_root: Path | None, work: Path
) -> tuple[torch.Tensor, ReportSimilarity] | str:
    """The features of ``source`` for ``reports`` and the similarity that compares them (or why it cannot run)."""
    if source == "findings":
        return findings_features(reports.texts), ReportSimilarity("findings", gather_distributed=False)
    if source in ("tfidf", "tfidf_negation"):
        features = tfidf_features(train.texts, reports.texts, mark_negation=source == "tfidf_negation")
    else:
        encoded = encoder_features(source, reports, train, demo_root, work)
        if isinstance(encoded, str):
            return encoded
        features = encoded
    # centred already: a plain cosine (the text sources' similarity without a centre)
    return features, ReportSimilarity("text_online", gather_distributed=False)


FLAG_KEYS = (
    "flag_precision",
    "flag_recall",
    "flag_rate",
    "base_rate",
    "abnormal_flag_precision",
    "abnormal_flag_recall",
    "abnormal_flag_rate",
    "abnormal_base_rate",
    "normal_abnormal_flag_rate",
)


def flag_block(features: torch.Tensor, similarity: ReportSimilarity, truth: torch.Tensor, theta: float) -> dict:
    stats = flag_statistics(features, truth, theta, similarity.source, similarity)
    return {"theta": theta, **{key: stats[key] for key in FLAG_KEYS if key in stats}}


def labeler_scores(reports: ReportSet) -> dict[str, Any]:
    """Per-finding precision, recall and F1 of the labeler (positive or uncertain = stated) against the truth,
    with its negation errors: ``negated_but_true`` (a mention read as negated where the truth has the finding) and
    ``missed_negation`` (a finding read as stated, absent from the truth, in a sentence with a negation cue)."""
    labeled = [label_report(t) for t in reports.texts]
    per: dict[str, Any] = {}
    for column, finding in enumerate(reports.findings):
        tp = fp = fn = negated_but_true = missed_negation = 0
        examples: dict[str, list[str]] = {"false_positive": [], "false_negative": []}
        for report_id, lab, row in zip(reports.ids, labeled, reports.truth, strict=True):
            stated, true = lab.states.get(finding) in (POSITIVE, UNCERTAIN), bool(row[column])
            tp += stated and true
            if stated and not true:
                fp += 1
                examples["false_positive"].append(report_id)
                cued = any(negated_spans(lab.sentences[m.sentence]) for m in lab.mentions if m.finding == finding)
                missed_negation += cued
            if true and not stated:
                fn += 1
                examples["false_negative"].append(report_id)
                negated_but_true += lab.states.get(finding) == NEGATED
        if tp + fn == 0 and fp == 0:
            continue
        precision = tp / (tp + fp) if tp + fp else float("nan")
        recall = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        per[finding] = {
            "positives": tp + fn,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "negated_but_true": negated_but_true,
            "missed_negation": missed_negation,
            "examples": {k: v[:10] for k, v in examples.items()},
        }
    counted = [v["f1"] for v in per.values() if v["positives"] >= MIN_POSITIVES]
    return {
        "per_finding": per,
        "mean_f1": sum(counted) / len(counted) if counted else float("nan"),
        "mean_f1_findings": sorted(k for k, v in per.items() if v["positives"] >= MIN_POSITIVES),
        "negation_errors": sum(v["negated_but_true"] + v["missed_negation"] for v in per.values()),
    }


def _targets(kind: str, blocks: Mapping[str, Any]) -> dict[str, Any]:
    findings = blocks.get("findings", {})
    measured = {
        key: findings.get("labeler", {}).get(key) if key == "mean_f1" else findings.get(key) for key in TARGETS[kind]
    }
    met = all(value is not None and value == value and value >= TARGETS[kind][key] for key, value in measured.items())
    return {"targets": TARGETS[kind], "measured": measured, "targets_met": met}


def run(
    reports_dir: str | Path,
    out: str | Path,
    part: str = "all",
    sources: Sequence[str] = SOURCES,
    demo_root: str | Path | None = "data/demo",
) -> dict[str, Any]:
    """Score every source on ``part`` of the folder and write ``OUT/report_similarity.json``; returns its content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    everything = load_reports(reports_dir)
    scored = everything.select(PARTS if part == "all" else ("training", "validation") if part == "dev" else (part,))
    train = everything.select(("training",))
    demo = Path(demo_root) if demo_root is not None else None
    blocks: dict[str, Any] = {}
    for source in sources:
        made = source_features(source, scored, train, demo, out)
        if isinstance(made, str):
            blocks[source] = {"skipped": made}
            continue
        features, similarity = made
        blocks[source] = flag_block(features, similarity, scored.truth, THETAS[everything.kind][source])
        if source == "findings":
            blocks[source]["uncertain_value"] = UNCERTAIN_VALUE
            blocks[source]["labeler"] = labeler_scores(scored)
        logger.info(
            "%s: flag precision %.3f, recall %.3f",
            source,
            blocks[source]["flag_precision"],
            blocks[source]["flag_recall"],
        )
    result = {
        "dataset": everything.kind,
        "part": part,
        "reports": len(scored.ids),
        "abnormal_reports": int((scored.truth.sum(1) > 0).sum()),
        "excluded": everything.excluded,
        "truth": "MeSH major terms mapped by sista_monai.transforms.findings.MESH_MAP"
        if everything.kind == "iu_xray"
        else "the demo's finding labels",
        "pairs": "a pair of different studies should be flagged when their truth finding sets are equal; abnormal: "
        "the pairs that are not normal-normal by truth",
        "sources": blocks,
        **_targets(everything.kind, blocks),
    }
    write_json(out / "report_similarity.json", result)
    return result


def choose(reports_dir: str | Path, demo_root: str | Path | None, work: str | Path) -> dict[str, Any]:
    """The validation sweep behind :data:`THETAS` and :data:`UNCERTAIN_VALUE`: flag F1 per θ and source."""
    everything = load_reports(reports_dir)
    validation, train = everything.select(("validation",)), everything.select(("training",))
    thetas = [round(0.02 * k, 2) for k in range(-10, 51)]
    sweep: dict[str, Any] = {}
    candidates: list[tuple[str, tuple[torch.Tensor, ReportSimilarity] | str]] = [
        (f"findings@uncertain={u}", (findings_features(validation.texts, u), ReportSimilarity("findings")))
        for u in (0.0, 0.5, 1.0)
    ]
    demo = Path(demo_root) if demo_root is not None else None
    candidates += [(s, source_features(s, validation, train, demo, Path(work))) for s in SOURCES[1:]]
    for name, made in candidates:
        if isinstance(made, str):
            continue
        features, similarity = made
        best = None
        for theta in thetas:
            stats = flag_statistics(features, validation.truth, theta, similarity.source, similarity)
            p, r = stats["flag_precision"], stats["flag_recall"]
            f1 = 2 * p * r / (p + r) if p == p and r == r and p + r > 0 else 0.0
            if best is None or f1 > best["f1"]:
                best = {"theta": theta, "f1": f1, "precision": p, "recall": r}
        sweep[name] = best
    return sweep


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sista_monai.experiments report_similarity",
        description="Score the report-similarity sources of SIA against human truth (IU X-ray MeSH or demo labels).",
    )
    parser.add_argument("--reports", required=True, help="IU X-ray report XML folder, or a demo data folder")
    parser.add_argument("--out", required=True, help="output folder (report_similarity.json)")
    parser.add_argument("--part", default="all", choices=("all", "dev", *PARTS), help="which part to score")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    parser.add_argument("--demo-data", default="data/demo", help="the demo data folder (text_frozen's encoder)")
    parser.add_argument(
        "--choose", action="store_true", help="print the validation sweep behind the fixed θ values (writes nothing)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.choose:
            print(json.dumps(choose(args.reports, args.demo_data, args.out), indent=2))
            return 0
        result = run(args.reports, args.out, args.part, args.sources, args.demo_data)
    except (FileNotFoundError, SistaDataError) as err:
        print(f"report_similarity: {err}", file=sys.stderr)
        return 2
    rows = [
        f"{name:16s} P {b['flag_precision']:.3f} R {b['flag_recall']:.3f} rate {b['flag_rate']:.4f} | abnormal P "
        f"{b.get('abnormal_flag_precision', float('nan')):.3f} R {b.get('abnormal_flag_recall', float('nan')):.3f}"
        for name, b in result["sources"].items()
        if "skipped" not in b
    ]
    print(f"{result['dataset']} ({result['part']}, {result['reports']} reports)\n" + "\n".join(rows))
    labeler = result["sources"].get("findings", {}).get("labeler")
    if labeler:
        print(f"labeler mean F1 (findings with >= {MIN_POSITIVES} positives): {labeler['mean_f1']:.3f}")
    print(f"targets met: {result['targets_met']}  ->  {Path(args.out) / 'report_similarity.json'}")
    return 0
