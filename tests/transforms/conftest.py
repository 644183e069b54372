"""A tokenizer that splits some report words into pieces, shared by the word-layout and grounding tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from sista_monai.data.tokenizer import train_wordpiece_tokenizer

# The vocabulary learnt from these (min_frequency 2) keeps "right", "left", "opacity", "effusion" whole and splits the
# rare "pneumothorax", "retrocardiac" and "base" into pieces; "effusions" becomes "effusion" + "##s".
SPLIT_WORD_TEXTS = [
    "No pleural effusion.",
    "Small right pleural effusion.",
    "Small left pleural effusion.",
    "Right lower lobe opacity.",
    "Left lower lobe opacity.",
    "Right upper lobe opacity.",
    "The lungs are clear.",
    "The heart size is normal.",
    "Heart size is normal, lungs are clear.",
    "No focal opacity in the right lung.",
    "No focal opacity in the left lung.",
    "Patchy opacity at the left base.",
    "Moderate left pleural effusion.",
    "Mild cardiomegaly is present.",
    "Small right pneumothorax.",
    "Bilateral effusions with retrocardiac atelectasis.",
]


@pytest.fixture(scope="session")
def split_word_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WordPiece tokenizer folder trained on :data:`SPLIT_WORD_TEXTS`."""
    return train_wordpiece_tokenizer(SPLIT_WORD_TEXTS, tmp_path_factory.mktemp("wp") / "tok", vocab_size=150)
