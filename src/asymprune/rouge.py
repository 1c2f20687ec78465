"""ROUGE for summaries, offline: ``rouge_score`` with stemming, sentences split by pysbd.

What the papers' code (HF ``run_summarization``) reports, without the hub or nltk data:
- F-measure of rouge1, rouge2, rougeL, rougeLsum, averaged over samples, x 100.
  (``evaluate.load("rouge")`` with its default aggregator reports the bootstrap median of the
  mean, which equals the plain mean up to resampling noise; the plain mean is deterministic.)
- ``use_stemmer=True`` (Porter stemming of tokens longer than 3 characters), as in the papers.
- rougeLsum is the summary-level LCS over *lines*: ``rouge_score`` splits both texts on "\\n".
  run_summarization puts one sentence per line (nltk) before scoring; without that step a
  one-line text is a single "sentence" and rougeLsum silently equals rougeL. pysbd does the
  splitting here because nltk's punkt model needs a download.

Pure Python, no torch: importable anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import pysbd
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@lru_cache(maxsize=1)
def _segmenter() -> pysbd.Segmenter:
    # clean=False: segment the text as it is (clean=True rewrites it, e.g. drops line breaks).
    return pysbd.Segmenter(language="en", clean=False)


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def split_sentences(text: str) -> str:
    """One sentence per line. Existing line breaks stay boundaries (rouge_score treats them
    so anyway); pysbd splits within each line; blank pieces are dropped."""
    sentences = []
    for line in text.splitlines():
        if line.strip():
            sentences.extend(s.strip() for s in _segmenter().segment(line) if s.strip())
    return "\n".join(sentences)


def score(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean F-measure x 100 of rouge1, rouge2, rougeL and rougeLsum over aligned pairs.

    An empty *prediction* is a valid (bad) summary and scores 0; an empty *list*, a length
    mismatch or a non-string is an error, never a number.
    """
    return mean(per_example(predictions, references))


def mean(per: Sequence[dict[str, float]]) -> dict[str, float]:
    """The corpus score from :func:`per_example` rows: each ROUGE type averaged over them."""
    if not per:
        raise ValueError("rouge: no per-example scores to average")
    return {key: sum(row[key] for row in per) / len(per) for key in ROUGE_TYPES}


def bootstrap_ci(values: Sequence[float], *, level: float = 0.95, resamples: int = 1000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: resample the documents with replacement
    ``resamples`` times (seeded, so the interval is reproducible) and take the
    (1 - level) / 2 and (1 + level) / 2 quantiles of the resampled means. E.g. 100 test
    documents with a per-document R-2 spread of 20 points give an interval about
    +- 1.96 * 20 / sqrt(100) = +- 3.9 points wide around the mean."""
    import random

    values = list(values)
    if len(values) < 2:
        raise ValueError("a bootstrap interval needs at least 2 values")
    if not 0 < level < 1 or resamples < 10:
        raise ValueError(f"level must be in (0, 1) and resamples >= 10, got {level}, "
                         f"{resamples}")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    lo = means[int((1 - level) / 2 * (resamples - 1))]
    hi = means[int(round((1 + level) / 2 * (resamples - 1)))]
    return lo, hi


def per_example(predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
    """F-measure x 100 of each ROUGE type for each aligned pair (the checks of :func:`score`)."""
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"rouge: {len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("rouge: no predictions to score (empty input)")
    for name, texts in (("prediction", predictions), ("reference", references)):
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"rouge: {name} {bad} is {type(texts[bad]).__name__}, not str")
    scorer = _scorer()
    rows = []
    for pred, ref in zip(predictions, references):
        # RougeScorer.score(target, prediction): the reference comes first.
        scores = scorer.score(split_sentences(ref), split_sentences(pred))
        rows.append({key: 100.0 * scores[key].fmeasure for key in ROUGE_TYPES})
    return rows
