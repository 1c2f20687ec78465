"""Summarize a split with a model and score it with ROUGE.

    python -m asymprune.evaluate --model MODEL_DIR --data-file test.jsonl \\
        --output results/<preset>/eval/<size>/<dataset>/<variant>.json \\
        --predictions results/<preset>/eval/<size>/<dataset>/<variant>.predictions.jsonl

Rows are ``{"id", "source", "target"}`` (``source`` already carries the task prefix). Decoding
goes through ``asymprune.engine.generate_with``: ``--engine eager`` is
``asymprune.generation.generate`` (greedy by default; encoder-shallower variants such as e1d6
work), ``--engine compiled`` the static-cache compiled greedy decoder, token for token the
same; ``--engine ct2-<compute type>`` decodes the model's CTranslate2 export (``--ct2-model``,
written by ``asymprune.ct2``) quantized to that type when loaded. With
``--reference-predictions`` (the main evaluation's predictions of the same model), the sidecar
also records ``identical_share``: the share of documents whose prediction equals the reference
one, e.g. how many outputs int8 changes. Metrics follow HF ``run_summarization``: ROUGE F x 100 from
``asymprune.rouge`` and ``gen_len`` = mean count of non-pad tokens in each generated
continuation (EOS included, the decoder start token not).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from asymprune import records, rouge
from asymprune.artifacts import read_jsonl, write_jsonl
from asymprune.engine import generate_with
from asymprune import settings, settings_io
from asymprune.model_record import ModelRecord, read_sidecar
from asymprune.modeling import count_parameters, load_model, load_tokenizer, resolve_device
from asymprune.provenance import make_sidecar, write_json

COLUMNS = ("id", "source", "target")


# Top-level keys of the output JSON that a --tag must not overwrite.
RESERVED = frozenset({"stage", "created", "args", "code_version", "versions", "device", "samples",
                      "wall_time_s", "metrics", "generation_time_s", "model_layers",
                      "parameters", "generation_config", "model_sidecar", "engine",
                      "record", "metrics_ci95", "identical_share"})


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier() or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with a non-empty value, got {text!r}")
    if key in RESERVED:
        raise argparse.ArgumentTypeError(f"tag {key!r} would overwrite a key the stage writes")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asymprune.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--model", required=True,
                    help="model folder written by save_pretrained (model + tokenizer) or a hub id")
    io.add_argument("--data-file", required=True, type=Path,
                    help="JSONL split with 'id', 'source' (prefixed) and 'target' per row")
    io.add_argument("--output", required=True, type=Path,
                    help="JSON file: sidecar + metrics + the model folder's sidecar")
    io.add_argument("--predictions", required=True, type=Path,
                    help="JSONL file: one {'id', 'prediction', 'reference', 'gen_len'} per row, "
                         "in input order")
    io.add_argument("--tag", action="append", default=[], type=_tag, metavar="KEY=VALUE",
                    help="label copied to the top level of --output, repeatable; the workflow "
                         "passes size, dataset and variant, which the report groups by")
    io.add_argument("--ct2-model", type=Path,
                    help="the model's CTranslate2 folder (asymprune.ct2); needed by a ct2-* "
                         "engine")
    io.add_argument("--reference-predictions", type=Path,
                    help="predictions JSONL of the same model by another engine (the main "
                         "evaluation): record the share of documents predicted identically")
    dev = p.add_argument_group("device")
    dev.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="auto = cuda when available, else cpu (default: %(default)s)")
    settings_io.add_arguments(p, settings.Evaluate)
    return p


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, settings.Evaluate]:
    """The stage's own arguments and its settings."""
    p = build_parser()
    args, e = settings_io.parse(p, settings.Evaluate, argv)
    if e.engine.startswith("ct2-") != (args.ct2_model is not None):
        p.error("--ct2-model goes with a ct2-* --engine, and a ct2-* engine needs it")
    if args.ct2_model is not None and not (args.ct2_model / "model.bin").is_file():
        p.error(f"--ct2-model {args.ct2_model}: no model.bin there (export it with "
                f"python -m asymprune.ct2)")
    keys = [k for k, _ in args.tag]
    if len(set(keys)) != len(keys):
        p.error(f"--tag: a key is given twice in {keys}")
    return args, e


def load_rows(path: Path, max_samples: int | None) -> list[dict]:
    """The split's rows (the first ``max_samples``), checked for the three columns."""
    if not path.is_file():
        raise FileNotFoundError(f"--data-file {path} does not exist")
    rows = read_jsonl(path)
    if max_samples is not None:
        rows = rows[:max_samples]
    if not rows:
        raise ValueError(f"--data-file {path} has no rows to evaluate")
    for i, row in enumerate(rows):
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ValueError(f"--data-file {path}: row {i} lacks column(s) {missing}")
        if not isinstance(row["source"], str) or not isinstance(row["target"], str):
            raise ValueError(f"--data-file {path}: row {i} needs string 'source' and 'target'")
    return rows


def summarize(model, tokenizer, sources: list[str], *, batch_size: int, max_source_length: int,
              max_new_tokens: int, num_beams: int, device: torch.device,
              engine: str = "eager") -> tuple[list[str], list[int]]:
    """Predictions and generated-token counts, in the order of ``sources``.

    Batches are built from sources sorted by token length, longest first: padding per batch
    shrinks (a batch is as long as its longest source), and a batch too big for memory fails
    on the first call rather than at the end.
    """
    lengths = [len(ids) for ids in tokenizer(sources, truncation=True,
                                             max_length=max_source_length)["input_ids"]]
    order = sorted(range(len(sources)), key=lambda i: -lengths[i])  # stable: ties keep input order
    predictions: list[str | None] = [None] * len(sources)
    gen_lens: list[int | None] = [None] * len(sources)
    pad = tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([sources[i] for i in idx], truncation=True, max_length=max_source_length,
                        padding=True, return_tensors="pt").to(device)
        out = generate_with(engine, model, enc["input_ids"], enc["attention_mask"],
                            max_new_tokens=max_new_tokens, num_beams=num_beams)
        # out[:, 0] is the decoder start token (T5: <pad>); after EOS generate pads with <pad>.
        # run_summarization's gen_len counts tokens != pad, i.e. the continuation up to and
        # including EOS: e.g. [<pad>, 17, 42, </s>, <pad>, <pad>] -> 3.
        continuation = out[:, 1:]
        counts = (continuation != pad).sum(dim=1).tolist()
        texts = tokenizer.batch_decode(continuation, skip_special_tokens=True)
        for j, i in enumerate(idx):
            predictions[i] = texts[j].strip()
            gen_lens[i] = counts[j]
    return predictions, gen_lens  # type: ignore[return-value]


def identical_share(predictions: list[str], rows: list[dict], reference: Path) -> float:
    """Share of documents whose prediction equals the reference engine's, matched by id."""
    ref = {r["id"]: r["prediction"] for r in read_jsonl(reference)}
    missing = [r["id"] for r in rows if r["id"] not in ref]
    if missing:
        raise ValueError(f"--reference-predictions {reference} lacks {len(missing)} of the "
                         f"{len(rows)} documents (first: {missing[0]!r})")
    return sum(p == ref[r["id"]] for p, r in zip(predictions, rows)) / len(rows)


def read_record(model: str, encoder_layers: int, decoder_layers: int
                ) -> tuple[dict | None, ModelRecord]:
    """The model folder's sidecar (None: a hub id or a folder without one) and the record the
    stage that saved the model wrote in it, checked against the depth loaded. Without a
    sidecar the model is a teacher whose training is not counted."""
    sidecar, record = read_sidecar(model)
    if record is None:
        return None, ModelRecord(encoder_layers, decoder_layers, (), None)
    if (record.encoder_layers, record.decoder_layers) != (encoder_layers, decoder_layers):
        raise ValueError(f"{Path(model) / 'sidecar.json'}: record says {record.encoder_layers} encoder and "
                         f"{record.decoder_layers} decoder layers, the model in {model} has "
                         f"{encoder_layers} and {decoder_layers}")
    return sidecar, record


def main(argv: list[str] | None = None) -> int:
    args, e = parse_args(argv)
    t0 = time.time()
    rows = load_rows(args.data_file, e.max_samples)
    device = resolve_device(args.device)
    model = load_model(args.model, dtype=e.dtype).to(device).eval()
    tokenizer = load_tokenizer(args.model)
    model_sidecar, record = read_record(args.model, len(model.encoder.block),
                                        len(model.decoder.block))
    decoder = model
    if e.engine.startswith("ct2-"):
        from asymprune import ct2

        decoder = ct2.Ct2Model(args.ct2_model, ct2.compute_type(e.engine), device.type,
                               torch.get_num_threads())

    t_gen = time.time()
    predictions, gen_lens = summarize(
        decoder, tokenizer, [r["source"] for r in rows], batch_size=e.batch_size,
        max_source_length=e.max_source_length, max_new_tokens=e.max_new_tokens,
        num_beams=e.num_beams, device=device, engine=e.engine)
    generation_time_s = time.time() - t_gen

    references = [r["target"] for r in rows]
    per_doc = rouge.per_example(predictions, references)
    metrics = rouge.mean(per_doc)
    metrics["gen_len"] = sum(gen_lens) / len(gen_lens)
    # how far the mean could move on another sample of documents (seeded: reproducible);
    # one document has no spread to resample
    ci95 = ({k: list(rouge.bootstrap_ci([d[k] for d in per_doc])) for k in rouge.ROUGE_TYPES}
            if len(per_doc) > 1 else None)

    write_jsonl(args.predictions, ({"id": r["id"], "prediction": p, "reference": r["target"],
                                    "gen_len": g, **d}
                                   for r, p, g, d in zip(rows, predictions, gen_lens, per_doc)))
    tags = dict(args.tag)
    write_json(args.output, make_sidecar(
        "evaluate", {**settings_io.record(args, e), "tag": tags}, samples={"eval": len(rows)},
        wall_time_s=time.time() - t0,
        # what the report reads (asymprune.records.EvalRecord): metrics, engine and the typed
        # record of how the model was made (budget after the teacher, the NASH stage's facts)
        **records.EvalRecord(
            engine=e.engine, metrics=metrics, metrics_ci95=ci95,
            identical_share=(identical_share(predictions, rows, args.reference_predictions)
                             if args.reference_predictions is not None else None),
            record=record).to_dict(),
        generation_time_s=generation_time_s,
        model_layers={"encoder": len(model.encoder.block), "decoder": len(model.decoder.block)},
        parameters=count_parameters(model),
        generation_config=model.generation_config.to_diff_dict(),
        model_sidecar=model_sidecar,  # provenance; the report reads `record`
        **tags))
    print(" ".join(f"{k}={v:.2f}" for k, v in metrics.items()) + f" (n={len(rows)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
