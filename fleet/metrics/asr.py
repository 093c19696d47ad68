"""ASR accuracy: WER and CER after a Whisper-style English normalization.

The normalization follows the intent of openai-whisper's EnglishTextNormalizer (Radford et al.,
2022, "Robust Speech Recognition via Large-Scale Weak Supervision", appendix C): compare words, not
spelling conventions. Here: lower case, digits spelled out as words (num2words; 4-digit numbers
read as years), hyphens and punctuation removed (apostrophes inside words kept), whitespace
collapsed. References of this data set come in LibriSpeech (upper case, no punctuation) and
LJ Speech (numbers as words, punctuation) styles, so both sides go through the same function.
"""

from __future__ import annotations

import re

import jiwer
from num2words import num2words

_NUM = re.compile(r"\d+(?:[.,]\d+)*")
_PUNCT = re.compile(r"[^\w\s']")


def _spell(m: re.Match) -> str:
    tok = m.group(0).replace(",", "")
    try:
        if re.fullmatch(r"1[1-9]\d\d|20\d\d", tok):
            return num2words(int(tok), to="year")
        return num2words(float(tok) if "." in tok else int(tok))
    except (ValueError, OverflowError):
        return tok


def normalize(text: str) -> str:
    """Normalize an English transcript for WER: ``"In 1961, Mr. Kennedy-said"`` →
    ``"in nineteen sixty one mr kennedy said"``."""
    t = text.lower().replace("-", " ")
    t = _NUM.sub(_spell, t)
    t = t.replace("-", " ")
    t = _PUNCT.sub(" ", t)
    t = re.sub(r"(?<!\w)'|'(?!\w)", " ", t)  # quotes, not apostrophes inside words
    return " ".join(t.split())


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
