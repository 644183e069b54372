"""The demo's masked-language-model text encoder: it learns, it loads, and it is deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertModel

from sista_monai.data.demo_text import train_mlm_text_encoder
from sista_monai.data.tokenizer import train_wordpiece_tokenizer
from sista_monai.networks import HuggingFaceTextEncoder

SIDES = ("right", "left")
TEXTS = [
    f"{template.format(side=side)}"
    for side in SIDES
    for template in (
        "No pleural effusion or pneumothorax.",
        "Small {side} pleural effusion.",
        "Moderate {side} pleural effusion.",
        "{side} lower lobe opacity, concerning for pneumonia.",
        "{side} upper lobe opacity.",
        "Small {side} apical pneumothorax.",
        "The lungs are clear. The heart size is normal.",
        "Heart size is normal. No focal consolidation.",
        "Mild cardiomegaly. No pleural effusion.",
        "Patchy opacity at the {side} base.",
        "No acute cardiopulmonary process.",
        "{side} basilar atelectasis. No pneumothorax.",
        "Lungs are clear without focal consolidation.",
        "Moderate cardiomegaly with mild pulmonary edema.",
        "Trace {side} pleural effusion. No pneumothorax.",
    )
]
CONFIG = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 64,
}
SETTINGS = {"epochs": 3, "batch_size": 8}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_wordpiece_tokenizer(TEXTS, tmp_path_factory.mktemp("wp") / "tok", vocab_size=120)


@pytest.fixture(scope="module")
def trained(tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    out = tmp_path_factory.mktemp("mlm") / "seed0"
    summary = train_mlm_text_encoder(TEXTS, tokenizer, CONFIG, out, max_length=32, seed=0, settings=SETTINGS)
    return out, summary


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_mlm_loss_decreases_and_the_summary_is_recorded(trained: tuple[Path, dict[str, float]]) -> None:
    folder, summary = trained
    assert len(TEXTS) == 30
    assert summary["final_loss"] < summary["first_loss"]
    assert set(summary) == {"first_loss", "final_loss", "seconds"}
    record = json.loads((folder / "mlm.json").read_text())
    assert record["reports"] == 30 and record["seed"] == 0
    assert record["settings"]["epochs"] == 3 and record["settings"]["batch_size"] == 8
    assert record["first_loss"] == summary["first_loss"] and record["final_loss"] == summary["final_loss"]
    assert (folder / "tokenizer.json").is_file() and (folder / "config.json").is_file()


def test_mlm_loss_falls_clearly_with_more_epochs(tokenizer: Path, tmp_path: Path) -> None:
    summary = train_mlm_text_encoder(
        TEXTS, tokenizer, CONFIG, tmp_path / "long", max_length=32, seed=0, settings={**SETTINGS, "epochs": 20}
    )
    # about 4.79 -> 4.47 for seeds 0-2; an encoder that does not learn stays near log(vocabulary size)
    assert summary["final_loss"] < summary["first_loss"] - 0.2


def test_saved_folder_loads_into_the_configured_encoder(
    trained: tuple[Path, dict[str, float]], tokenizer: Path
) -> None:
    folder, _ = trained
    from transformers import AutoTokenizer

    vocab_size = len(AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True))
    encoder = HuggingFaceTextEncoder(config={**CONFIG, "vocab_size": vocab_size}, pretrained_weights=folder).eval()
    reference = BertModel.from_pretrained(str(folder), local_files_only=True, add_pooling_layer=False).eval()
    saved = _weights(folder)
    state = encoder.model.state_dict()
    for name, value in saved.items():
        if name.startswith("pooler"):
            continue
        assert torch.equal(state[name], value), name
    ids = torch.tensor([[2, 10, 11, 12, 3, 0], [2, 13, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(ids, mask).token_features, reference(input_ids=ids, attention_mask=mask).last_hidden_state
        )
    # the tokenizer-derived vocabulary also works (config without vocab_size)
    HuggingFaceTextEncoder(config=CONFIG, tokenizer=folder, pretrained_weights=folder)


def test_same_seed_is_bitwise_identical_and_another_seed_differs(
    trained: tuple[Path, dict[str, float]], tokenizer: Path, tmp_path: Path
) -> None:
    folder, summary = trained
    torch.manual_seed(123)  # the global random state before the call must not matter
    again = train_mlm_text_encoder(
        TEXTS, tokenizer, CONFIG, tmp_path / "again", max_length=32, seed=0, settings=SETTINGS
    )
    first, second = _weights(folder), _weights(tmp_path / "again")
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert again["first_loss"] == summary["first_loss"] and again["final_loss"] == summary["final_loss"]

    train_mlm_text_encoder(TEXTS, tokenizer, CONFIG, tmp_path / "other", max_length=32, seed=1, settings=SETTINGS)
    other = _weights(tmp_path / "other")
    assert not torch.equal(first["embeddings.word_embeddings.weight"], other["embeddings.word_embeddings.weight"])


def test_real_data_brings_its_own_text_encoder(tmp_path: Path) -> None:
    """``demo_data false``: nothing is trained (the folder need not even hold a datalist)."""
    from sista_monai.data.demo_text import demo_text_encoder

    assert demo_text_encoder(tmp_path, {"hidden_size": 8}, demo_data="false") is None
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="demo_data must be true or false"):
        demo_text_encoder(tmp_path, {}, demo_data="maybe")
