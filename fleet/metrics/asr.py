"""ASR accuracy: WER and CER after the standard Whisper English text normaliser.

Both sides go through ``EnglishTextNormalizer`` of the PyPI package ``whisper-normalizer``
(a packaged copy of openai-whisper's ``whisper/normalizers/english.py``; Radford et al., 2022,
"Robust Speech Recognition via Large-Scale Weak Supervision", appendix C), so the figures compare
with published Whisper WERs and with MLPerf's Whisper accuracy script, which uses the same class
(mlcommons/inference ``speech2text/accuracy_eval.py``). It lower-cases, removes punctuation and
bracketed text, expands contractions (``don't`` → ``do not``), standardises British spellings and
writes spoken numbers as digits: ``fifth`` → ``5th``, ``five dollars fifty`` → ``$5 50``,
``ten percent`` → ``10%``, ``nineteen sixty one`` → ``1961``. References of this data set come in
LibriSpeech (upper case, no punctuation, numbers as words) and LJ Speech (punctuation, numbers as
words) styles; the normaliser makes them comparable with Whisper's digit-writing hypotheses.
"""

from __future__ import annotations

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

# one instance: it loads its British→American spelling table once (about 1700 entries)
_NORMALIZER = EnglishTextNormalizer()


def normalize(text: str) -> str:
    """Normalise an English transcript for WER (Whisper's EnglishTextNormalizer):
    ``"In 1961, Mr. Kennedy-said"`` → ``"in 1961 mister kennedy said"``."""
    return _NORMALIZER(text)


def wer_cer(references: list[str], hypotheses: list[str]) -> tuple[float, float]:
    """Corpus WER and CER (ratios, 0..∞) over paired transcripts, after ``normalize``.

    Raises:
        ValueError: lists of different lengths, or no reference words at all.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalize(r) for r in references]
    hyps = [normalize(h) for h in hypotheses]
    if not any(refs):
        raise ValueError("no reference words to score against")
    return float(jiwer.wer(refs, hyps)), float(jiwer.cer(refs, hyps))
