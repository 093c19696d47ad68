import pytest

from fleet.metrics.asr import normalize, wer_cer


def test_normalize_librispeech_and_lj_styles_agree():
    assert normalize("THE CONTESTANTS IN THE TWENTIES") == normalize("The contestants, in the twenties.")


def test_normalize_numbers_become_words():
    assert normalize("In 1961 we had 42 ships") == "in nineteen sixty one we had forty two ships"


def test_normalize_keeps_apostrophes_drops_quotes():
    assert normalize("\"Don't,\" he said -- 'now'") == "don't he said now"


def test_wer_counts_errors():
    wer, cer = wer_cer(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert wer == pytest.approx(1 / 6)
    assert 0 < cer < wer


def test_wer_rejects_mismatched_lists():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer_cer(["a", "b"], ["a"])
