"""ROUGE against values computed by hand (F = 2PR / (P + R), x 100)."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from asymprune.rouge import ROUGE_TYPES, score, split_sentences


def test_identical_is_100_and_disjoint_is_0():
    same = score(["the council approved the budget."], ["the council approved the budget."])
    assert same == pytest.approx(dict.fromkeys(ROUGE_TYPES, 100.0))
    assert score(["storm closed bridge"], ["minister announced plans"]) == dict.fromkeys(ROUGE_TYPES, 0.0)


def test_hand_computed_overlap():
    # ref "the cat was on the mat", pred "the cat sat on the mat": 6 tokens each.
    # unigrams: the x2, cat, on, mat match -> 5/6 both ways -> F = 5/6.
    # bigrams: "the cat", "on the", "the mat" of 5 each -> F = 3/5.
    # LCS "the cat on the mat" = 5 -> F = 5/6; one sentence, so Lsum = L.
    got = score(["the cat sat on the mat"], ["the cat was on the mat"])
    assert got == pytest.approx({"rouge1": 500 / 6, "rouge2": 60.0,
                                 "rougeL": 500 / 6, "rougeLsum": 500 / 6})


def test_precision_and_recall_differ():
    # pred "the cat sat" (3 tokens) vs ref of 6 tokens: 2 matches ("the", "cat").
    # P = 2/3, R = 2/6 -> F = 2 * (2/9) / (2/3 + 1/3) = 4/9.
    got = score(["the cat sat"], ["the cat was on the mat"])
    assert got["rouge1"] == pytest.approx(400 / 9)


def test_stemming_is_on():
    # Porter: cats -> cat, running -> run, runs -> run; unstemmed this would be 0.
    assert score(["cats running"], ["cat runs"])["rouge1"] == pytest.approx(100.0)


def test_mean_over_samples():
    got = score(["bridge closed", "energy prices"], ["bridge closed", "council budget"])
    assert got["rouge1"] == pytest.approx(50.0)


def test_lsum_uses_sentences():
    ref = "Rain fell on the city. Police closed the bridge."
    pred = "Police closed the bridge. Rain fell on the city."
    # rougeL over 9 tokens each: the LCS is "rain fell on the city" = 5 -> F = 5/9.
    # rougeLsum: each reference sentence's union-LCS against the predicted sentences is the
    # whole sentence (5 + 4 = 9 of 9) -> F = 1.
    got = score([pred], [ref])
    assert got["rougeL"] == pytest.approx(500 / 9)
    assert got["rougeLsum"] == pytest.approx(100.0)
    # The trap this module avoids: without one sentence per line, Lsum collapses to L.
    raw = rouge_scorer.RougeScorer(["rougeL", "rougeLsum"], use_stemmer=True).score(ref, pred)
    assert raw["rougeLsum"].fmeasure == pytest.approx(raw["rougeL"].fmeasure)


def test_split_sentences():
    assert split_sentences("Dr. Smith went home. It rained!") == "Dr. Smith went home.\nIt rained!"
    assert split_sentences("One line.\n\nAnother line") == "One line.\nAnother line"
    assert split_sentences("") == ""


def test_empty_prediction_scores_zero():
    assert score([""], ["the budget"]) == dict.fromkeys(ROUGE_TYPES, 0.0)


@pytest.mark.parametrize("preds,refs,msg", [
    ([], [], "empty"),
    (["a"], ["a", "b"], "1 predictions but 2 references"),
    ([None], ["a"], "prediction 0 is NoneType"),
])
def test_bad_input_is_an_error(preds, refs, msg):
    with pytest.raises(ValueError, match=msg):
        score(preds, refs)


def test_bootstrap_interval_brackets_the_mean_and_is_reproducible():
    from asymprune.rouge import bootstrap_ci

    values = [0.0, 10.0] * 50  # mean 5, sd 5: the mean's sd is 5 / sqrt(100) = 0.5
    lo, hi = bootstrap_ci(values, seed=0)
    assert lo < 5.0 < hi
    assert 0.6 < hi - lo < 3.0  # about 2 x 1.96 x 0.5 = 1.96
    assert bootstrap_ci(values, seed=0) == (lo, hi)
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0])


def test_per_example_scores_average_to_the_corpus_score():
    from asymprune.rouge import per_example, score

    preds, refs = ["the cat sat on the mat", "a dog"], ["the cat sat", "a big dog ran"]
    per = per_example(preds, refs)
    assert len(per) == 2
    for key, value in score(preds, refs).items():
        assert value == pytest.approx((per[0][key] + per[1][key]) / 2)
