import pytest

from fleet.metrics.asr import normalize, wer_cer


def test_normalize_librispeech_and_lj_styles_agree():
    assert normalize("THE CONTESTANTS IN THE TWENTIES") == normalize("The contestants, in the twenties.")


@pytest.mark.parametrize("spoken, written", [
    # issue 13: our own normaliser made these "fiveth", "five point five" and "ten"
    ("the fifth of May", "the 5th of May"),
    ("five dollars and fifty cents", "$5.50"),
    ("ten percent", "10%"),
    ("in nineteen sixty one we had forty two ships", "In 1961 we had 42 ships"),
])
def test_spoken_and_written_numbers_compare_equal(spoken, written):
    assert normalize(spoken) == normalize(written)
    assert wer_cer([spoken], [written]) == (0.0, 0.0)


def test_numbers_are_written_as_digits_like_whisper():
    assert normalize("5th") == "5th" and normalize("the fifth") == "the 5th"
    assert normalize("$5.50") == "$5.50" and normalize("10%") == "10%"
    assert normalize("In 1961, Mr. Kennedy-said") == "in 1961 mister kennedy said"


def test_normalize_expands_contractions_drops_quotes_and_spelling():
    assert normalize("\"Don't,\" he said -- 'now'") == "do not he said now"
    assert normalize("The colour of the theatre") == "the color of the theater"


def test_wer_counts_errors():
    wer, cer = wer_cer(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert wer == pytest.approx(1 / 6)
    assert 0 < cer < wer


def test_wer_rejects_mismatched_lists():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer_cer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no reference words"):
        wer_cer(["uh, um [inaudible]"], ["a"])  # fillers and bracketed text are removed
