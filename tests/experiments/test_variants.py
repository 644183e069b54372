"""The ablation's design: each variant switches off one part, the sweep's runs, the contrasts, coinciding configurations."""

from __future__ import annotations

from sista_monai.experiments.variants import (
    EFFECTS,
    OFF_SOURCE,
    VARIANTS,
    bundle_defaults,
    same_configurations,
    sweep_variants,
)


def test_variants_switch_off_exactly_one_part_each() -> None:
    by_name = {v.name: dict(v.overrides) for v in VARIANTS}
    # θ above any similarity: nothing flagged; the source of a row with SIA off is pinned (it only feeds the flag
    # metrics), so that a change of the headline's source leaves its runs valid for --reuse
    assert OFF_SOURCE == {"similarity_source": "text_frozen"}
    assert by_name["clip"] == {"sia_threshold": 2.0, "lambda_token": 0.0, **OFF_SOURCE}
    assert by_name["clip_sia"] == {"lambda_token": 0.0} and by_name["clip_sta"] == {"sia_threshold": 2.0, **OFF_SOURCE}
    assert by_name["sista"] == {}
    assert by_name["sista_oracle"] == {"similarity_source": "labels", "sia_threshold": 0.95}
    assert by_name["sista_dense"] == {"sta_sparsity_threshold": 0.0}
    assert [by_name[f"sista_sigma_{s}"]["sta_sparsity_threshold"] for s in ("1p", "0.25", "0.75")] == [
        1 / 64,
        0.25,
        0.75,
    ]
    # issue 24: STA's terms one at a time, and the shuffled-pair control
    assert [by_name[f"sista_{c}"] for c in ("within", "cross", "both")] == [
        {"sta_contrast": "within"},
        {"sta_contrast": "cross"},
        {"sta_contrast": "both"},
    ]
    assert by_name["sista_shuffled"] == {"sta_pairs": "shuffled"}
    assert by_name["clip_sta_within"] == {"sia_threshold": 2.0, "sta_contrast": "within", **OFF_SOURCE}
    # issue 25: the report similarities, and SIA at a global batch of 64 against its SIA-off control
    assert by_name["sista_findings"] == {"similarity_source": "findings"}
    assert by_name["sista_text_frozen"] == {"similarity_source": "text_frozen", "sia_threshold": 0.76}
    assert by_name["sista_b64"] == {"batch_size": 64}
    assert by_name["clip_sta_b64"] == {"sia_threshold": 2.0, "batch_size": 64, **OFF_SOURCE}
    labels = {v.name: v.label for v in VARIANTS}
    assert (
        labels["sista_shuffled"].startswith("control:") and "mismatched image–report pairs" in labels["sista_shuffled"]
    )
    assert len(labels) == len(VARIANTS)  # names are unique


def test_sweep_variants_pick_one_run_per_source_with_sia_on() -> None:
    by_name = {v.name: v for v in VARIANTS}
    chosen = sweep_variants(VARIANTS, {"similarity_source": "findings", "sia_threshold": 0.9})
    assert chosen["findings"].name == "clip_sia"  # the first variant with the default source and SIA on
    assert chosen["text_frozen"].name == "sista_text_frozen"  # clip's text_frozen rows have SIA off
    assert chosen["labels"] is by_name["sista_oracle"] and chosen["text_online"] is by_name["sista_text_online"]
    only = sweep_variants([by_name["clip"], by_name["sista"]], {"similarity_source": "findings", "sia_threshold": 0.9})
    assert {s: v.name for s, v in only.items()} == {"findings": "sista"}


def test_effects_contrast_the_new_variants() -> None:
    contrasts = {label: (name, baseline) for label, name, baseline in EFFECTS}
    assert contrasts["cross-image STA (SISTA vs within-pair STA)"] == ("sista", "sista_within")
    assert contrasts["alignment (SISTA vs shuffled-pair STA)"] == ("sista", "sista_shuffled")
    assert contrasts["+ STA within pairs (vs CLIP only)"] == ("clip_sta_within", "clip")
    names = {v.name for v in VARIANTS} | {"random"}
    assert all(name in names and baseline in names for name, baseline in contrasts.values())


def test_variants_setting_a_default_run_the_same_configuration() -> None:
    by_name = {v.name: v for v in VARIANTS}
    contrast = bundle_defaults()["sta_contrast"]
    groups = same_configurations([by_name[n] for n in ("sista", "sista_within", "sista_cross", "sista_both")], {})
    assert groups == [["sista", f"sista_{contrast}"]]  # the variant naming today's default is SISTA itself
    # an override of the base moves SISTA off the default: no longer the same as sista_both
    assert same_configurations([by_name["sista"], by_name["sista_both"]], {"sta_contrast": "within"}) == []
