"""Tokenizers shared by the tests: one that splits some report words into pieces (word-layout and grounding
tests) and a WordPiece tokenizer trained on report sentences (tokenizer and report transform tests)."""

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


# A few dozen report sentences for training a real WordPiece vocabulary.
REPORT_SENTENCES = [
    "The heart size is normal.",
    "The lungs are clear.",
    "No pleural effusion or pneumothorax.",
    "No focal consolidation.",
    "Mild cardiomegaly is present.",
    "There is a small left pleural effusion.",
    "Right lower lobe opacity, concerning for pneumonia.",
    "The mediastinal contours are within normal limits.",
    "No acute cardiopulmonary process.",
    "Degenerative changes of the thoracic spine.",
    "Lungs are hyperinflated, with flattening of the hemidiaphragms.",
    "Heart size and pulmonary vascularity are normal.",
    "There is no pneumothorax.",
    "Stable appearance of the chest.",
    "Small bilateral pleural effusions with bibasilar atelectasis.",
    "Calcified granuloma in the right upper lobe.",
    "Endotracheal tube terminates 4 cm above the carina.",
    "No evidence of pulmonary edema.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Patchy opacity at the left base may represent atelectasis or pneumonia.",
    "Moderate right pneumothorax is seen.",
    "Interval resolution of the left lower lobe consolidation.",
    "Osseous structures are intact.",
    "Low lung volumes, otherwise clear lungs.",
    "No displaced rib fractures.",
    "Cardiomegaly with mild pulmonary edema.",
    "Left sided central venous catheter tip in the superior vena cava.",
    "Blunting of the costophrenic angles.",
    "No free air under the diaphragm.",
    "Normal chest radiograph.",
]


@pytest.fixture(scope="module")
def wordpiece_folder(tmp_path_factory) -> Path:
    """A real WordPiece tokenizer trained on report sentences, saved as a Hugging Face fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.train_from_iterator(REPORT_SENTENCES, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    backend.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    folder = tmp_path_factory.mktemp("wordpiece")
    fast.save_pretrained(folder)
    return folder
