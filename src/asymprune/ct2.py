"""CTranslate2: export a trained T5 once, then decode it at any compute type.

    python -m asymprune.ct2 --model results/demo/models/tiny/news/e6d3/model \\
        --output-dir results/demo/ct2/tiny/news/e6d3

(``--model A B --output-dir A2 B2`` exports several models in one process.)

Export (``export``): CTranslate2's own ``TransformersConverter`` writes the model folder
(``model.bin``, ``config.json``, the vocabulary) and a ``sidecar.json`` of ours. No quantization
is applied at export: the weights stay float32 and ``compute_type`` picks the precision when the
model is loaded (``ctranslate2.Translator(..., compute_type="int8")``), so one export serves
float32, int8, bfloat16, ... alike.

Width-pruned encoders (NASH, ``asymprune.modeling.ShapedT5ForConditionalGeneration``):
CTranslate2 builds every layer from ``num_heads`` and ``d_ff`` of ``config.json``, so a model
whose encoder layers kept different heads / FFN units is padded back to full width with zeros
before conversion (``pad_to_full_width``), which gives the same outputs:
  FFN    a dropped unit gets zero rows in wi (wi_0, wi_1) and a zero column in wo: its
         activation is act(0) * 0 = 0 (gated-gelu) or relu(0) = 0, times a zero column, so it
         adds exactly 0 to the residual.
  heads  a dropped head gets zero q/k/v rows and zero o columns: its scores are the position
         bias alone and its values are 0, so its output is 0 and o maps it to 0. The position
         bias embedding was never pruned (block 0 keeps all heads' buckets), so every padded
         head still has its bias. A padded head keeps its compute (the matmuls run over zeros):
         the sidecar counts them (``padded_heads``) and the report says so.

Decoding (``generate_ct2``): the same layout as ``asymprune.generation.generate``: column 0 the
decoder start token, a row padded with ``pad`` after its EOS, as wide as the longest row. Ids go
in and out through the exported vocabulary (token strings, what ``translate_batch`` takes; the
vocabulary is the tokenizer's ``convert_ids_to_tokens`` in id order).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from asymprune import settings
from asymprune.artifacts import atomic_dir
from asymprune.modeling import LAYER_SHAPES_KEY, load_model, load_tokenizer
from asymprune.provenance import make_sidecar, read_json, write_json

log = logging.getLogger("asymprune.ct2")

PREFIX = "ct2-"


def compute_type(engine: str) -> str:
    """``ct2-int8`` -> ``int8``; a ValueError for a name that is not a CTranslate2 engine."""
    if not engine.startswith(PREFIX) or engine[len(PREFIX):] not in settings.CT2_COMPUTE_TYPES:
        raise ValueError(f"{engine!r} is not a CTranslate2 engine; choose one of "
                         f"{[PREFIX + t for t in settings.CT2_COMPUTE_TYPES]}")
    return engine[len(PREFIX):]


def is_ct2(engine: str) -> bool:
    return engine.startswith(PREFIX)


# ---------------------------------------------------------------------------------------------
# export


def pad_to_full_width(model) -> tuple[Any, dict[str, int]]:
    """A stock ``T5ForConditionalGeneration`` with the same outputs as a width-pruned one:
    every dropped encoder head and FFN unit put back as zeros (see the module docstring).

    Returns (model, counts) with counts {"padded_heads", "padded_ffn_units"} summed over the
    encoder layers. A model without recorded layer shapes is returned as it is (counts 0).
    """
    from transformers import T5ForConditionalGeneration

    shapes = getattr(model.config, LAYER_SHAPES_KEY, None)
    if shapes is None:
        return model, {"padded_heads": 0, "padded_ffn_units": 0}
    config = model.config.__class__.from_dict(
        {k: v for k, v in model.config.to_dict().items() if k != LAYER_SHAPES_KEY})
    full = T5ForConditionalGeneration(config).to(next(model.parameters()).dtype).eval()
    own = model.state_dict()
    state = {}
    d_kv, n_heads, d_ff = config.d_kv, config.num_heads, config.d_ff
    heads_padded = units_padded = 0
    for name, target in full.state_dict().items():
        if name not in own:
            raise ValueError(f"padding to full width: the pruned model has no {name}")
        src = own[name]
        if src.shape == target.shape:
            state[name] = src
            continue
        parts = name.split(".")  # encoder.block.{i}.layer.{0|1}.{SelfAttention|DenseReluDense}.{w}
        if parts[0] != "encoder" or parts[1] != "block":
            raise ValueError(f"padding to full width: {name} has shape {tuple(src.shape)}, "
                             f"expected {tuple(target.shape)}, and only encoder layers are "
                             f"width-pruned")
        i, weight = int(parts[2]), parts[-2]
        out = torch.zeros_like(target)
        if weight in ("q", "k", "v", "o"):
            kept = shapes["encoder"]["kept_heads"][i]
            cols = torch.cat([torch.arange(h * d_kv, (h + 1) * d_kv) for h in kept]).long() \
                if kept else torch.zeros(0, dtype=torch.long)
            if weight == "o":
                out[:, cols] = src
            else:
                out[cols, :] = src
            if weight == "q":
                heads_padded += n_heads - len(kept)
        else:  # wi / wi_0 / wi_1 rows, wo columns: the kept units first, zeros after
            width = shapes["encoder"]["d_ff"][i]
            if weight == "wo":
                out[:, :width] = src
                units_padded += d_ff - width
            else:
                out[:width, :] = src
        state[name] = out
    full.load_state_dict(state)
    return full, {"padded_heads": heads_padded, "padded_ffn_units": units_padded}


class IdVocabulary:
    """A tokenizer stand-in for models without one (``benchmark --arch``: random weights):
    token i is ``<pad>``, ``</s>``, ``<unk>`` for 0, 1, 2 (T5's special ids) and ``t{i}``
    otherwise. It has what CTranslate2's T5 loader reads from a tokenizer."""

    pad_token, eos_token, unk_token = "<pad>", "</s>", "<unk>"

    def __init__(self, vocab_size: int):
        self.tokens = ["<pad>", "</s>", "<unk>"] + [f"t{i}" for i in range(3, vocab_size)]

    def get_vocab(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def convert_ids_to_tokens(self, i: int) -> str:
        return self.tokens[i]


def _converter(model, tokenizer, folder: Path):
    """CTranslate2's ``TransformersConverter`` given an in-memory model and tokenizer: it
    reads only ``config.json`` from ``folder`` (to choose its T5 loader) and takes the weights
    from ``model`` (its ``load_model`` / ``load_tokenizer`` hooks)."""
    import ctranslate2

    class Converter(ctranslate2.converters.TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            return model

        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return tokenizer

    return Converter(str(folder))


def export_model(model, tokenizer, output_dir: Path) -> dict[str, Any]:
    """Convert ``model`` (a loaded T5, pruned or not) into a CTranslate2 folder; returns what
    the sidecar records about the conversion."""
    import ctranslate2

    if model.config.model_type != "t5":
        raise ValueError(f"only T5 models are exported to CTranslate2 here, got model_type "
                         f"{model.config.model_type!r}")
    if next(model.parameters()).dtype != torch.float32:
        model = copy.deepcopy(model).float()  # the caller's model keeps its dtype
    full, padded = pad_to_full_width(model.eval())
    # CTranslate2's T5 loader scales the decoder output by d_model ** -0.5 when
    # config.tie_word_embeddings is set; transformers 5 ties every config-built T5 but scales
    # only when config.scale_decoder_outputs says so. Give the loader the flag that makes it
    # scale exactly when transformers does (on a copy: the caller's config is left alone).
    full.config = copy.deepcopy(full.config)
    full.config.tie_word_embeddings = bool(full.config.scale_decoder_outputs)
    # TransformersConverter reads config.json (not the weights) from a folder to pick its
    # loader: the stock config of the padded model, without our layer-shape record
    with tempfile.TemporaryDirectory() as tmp:
        full.config.to_json_file(Path(tmp) / "config.json")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        try:
            _converter(full, tokenizer, Path(tmp)).convert(str(output_dir), force=True)
        except (KeyError, ValueError, NotImplementedError) as e:
            # e.g. an activation CTranslate2 has no kernel for (KeyError 'gelu_pytorch_tanh')
            raise ValueError(f"CTranslate2 {ctranslate2.__version__} cannot convert this model "
                             f"(feed_forward_proj {model.config.feed_forward_proj!r}): "
                             f"{type(e).__name__}: {e}") from e
    return {"ctranslate2": ctranslate2.__version__, **padded,
            "vocabulary_size": len(vocabulary(output_dir))}


def vocabulary(folder: Path) -> list[str]:
    """The exported vocabulary, token i at index i."""
    folder = Path(folder)
    for name in ("shared_vocabulary.json", "target_vocabulary.json"):
        if (folder / name).is_file():
            return json.loads((folder / name).read_text())
    raise FileNotFoundError(f"{folder}: no CTranslate2 vocabulary (shared_vocabulary.json)")


# ---------------------------------------------------------------------------------------------
# decoding


class Ct2Model:
    """A loaded CTranslate2 translator and the id <-> token maps of its vocabulary."""

    def __init__(self, folder: Path, compute_type: str, device: str, threads: int):
        import ctranslate2

        supported = ctranslate2.get_supported_compute_types(device)
        if compute_type not in supported:
            raise ValueError(f"CTranslate2 cannot run compute type {compute_type!r} on {device} "
                             f"here (this machine supports {sorted(supported)})")
        self.folder = Path(folder)
        self.compute_type, self.device = compute_type, device
        self.translator = ctranslate2.Translator(str(folder), device=device,
                                                 compute_type=compute_type,
                                                 intra_threads=threads)
        self.tokens = vocabulary(folder)
        # the first id of a token: T5's converter appends <extra_id_*> names for embedding rows
        # past the tokenizer (FLAN-T5: 32100 tokens, 32128 rows) that repeat real ones
        self.ids: dict[str, int] = {}
        for i, t in enumerate(self.tokens):
            self.ids.setdefault(t, i)
        cfg = json.loads((self.folder / "config.json").read_text())
        self.start = self.ids[cfg["decoder_start_token"]]
        self.eos = self.ids[cfg["eos_token"]]
        # the T5 loader stores the tokenizer's pad token as bos_token; HF pads finished rows
        # with it
        self.pad = self.ids[cfg["bos_token"]]


def generate_ct2(model: Ct2Model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 *, max_new_tokens: int, min_new_tokens: int = 0, num_beams: int = 1,
                 use_cache: bool = True,
                 do_sample: bool = False) -> torch.Tensor:
    """Greedy (or beam) decoding with CTranslate2, laid out as HF ``generate``'s output."""
    if do_sample:
        raise ValueError("the CTranslate2 engine here decodes greedily or with beams; "
                         "do_sample=True needs --engine eager")
    if not use_cache:
        raise ValueError("CTranslate2 always caches keys and values (use_cache=False is not "
                         "supported)")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(input_ids.cpu(), attention_mask.cpu())]
    source = [[model.tokens[i] for i in row] for row in rows]
    results = model.translator.translate_batch(
        source, beam_size=num_beams, max_decoding_length=max_new_tokens,
        # min_decoding_length counts the tokens before EOS may come, as HF's min_new_tokens
        min_decoding_length=min_new_tokens, return_end_token=True,
        max_input_length=0)  # no truncation here: the caller truncated already
    outs = [[model.ids[t] for t in r.hypotheses[0]] for r in results]
    width = max(map(len, outs))
    out = torch.full((len(outs), 1 + width), model.pad, dtype=torch.long)
    out[:, 0] = model.start
    for j, row in enumerate(outs):
        out[j, 1:1 + len(row)] = torch.tensor(row, dtype=torch.long)
    return out.to(input_ids.device)


# ---------------------------------------------------------------------------------------------
# the stage


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m asymprune.ct2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, nargs="+",
                   help="model folder(s) written by save_pretrained (model + tokenizer)")
    p.add_argument("--output-dir", required=True, type=Path, nargs="+",
                   help="the CTranslate2 model folder of each --model, in the same order "
                        "(replaced), with sidecar.json")
    args = p.parse_args(argv)
    if len(args.model) != len(args.output_dir):
        p.error(f"{len(args.model)} --model folders but {len(args.output_dir)} --output-dir")
    for m in args.model:
        if not (m / "config.json").is_file():
            p.error(f"--model {m}: no config.json there")
    return args


def export_one(model_dir: Path, output_dir: Path) -> dict[str, Any]:
    """One model folder -> one CTranslate2 folder with its sidecar, written whole into a
    temporary folder and renamed into place: a kill mid-export leaves no folder that looks
    finished (the sidecar, the rule's output, comes last inside it)."""
    t0 = time.time()
    model = load_model(model_dir, "fp32").eval()
    model_sidecar = model_dir / "sidecar.json"
    with atomic_dir(output_dir) as tmp:
        info = export_model(model, load_tokenizer(model_dir), tmp)
        write_json(tmp / "sidecar.json", make_sidecar(
            "ct2", {"model": str(model_dir), "output_dir": str(output_dir)},
            wall_time_s=time.time() - t0,
            model_sidecar=read_json(model_sidecar) if model_sidecar.is_file() else None,
            **info))
    return info


def main(argv: list[str] | None = None) -> int:
    """Every model given, one after the other in one process: an export takes about a second
    of conversion after 4-6 CPU s of importing torch and transformers, so the workflow exports
    all models of a size/data set in one job (22 per job on the paper grid, not 22 jobs)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    for model_dir, output_dir in zip(args.model, args.output_dir):
        info = export_one(model_dir, output_dir)
        log.info("exported %s to %s (%s)", model_dir, output_dir, info)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
