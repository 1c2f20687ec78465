"""Loading models and tokenizers the same way in every stage.

``name_or_path`` is a hub id (``google/flan-t5-small``, what users run) or a local folder
written by ``save_pretrained`` (what the offline demo and the tests use): one code path.
A structurally pruned model (per-layer head counts or FFN widths, see ``asymprune.nash``)
records its shapes in its config; ``load_model`` rebuilds them before loading weights.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoTokenizer, T5ForConditionalGeneration
from transformers.models.t5.modeling_t5 import T5Attention

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when torch sees a GPU, else cpu; asking for cuda without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda given but torch sees no CUDA device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def load_tokenizer(name_or_path: str | Path):
    return AutoTokenizer.from_pretrained(str(name_or_path))


def load_model(name_or_path: str | Path, dtype: str = "fp32") -> T5ForConditionalGeneration:
    """A T5 seq2seq model from the hub or a local folder, in the given dtype."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    config = AutoConfig.from_pretrained(str(name_or_path))
    shaped = getattr(config, LAYER_SHAPES_KEY, None) is not None
    # A width-pruned model (NASH) needs its per-layer modules built before the weights load;
    # the same from_pretrained call loads both kinds.
    cls = model_class(config)
    model, info = cls.from_pretrained(str(name_or_path), config=config, dtype=DTYPES[dtype],
                                      output_loading_info=True)
    if shaped and any(info.get(k) for k in ("missing_keys", "unexpected_keys",
                                             "mismatched_keys", "error_msgs")):
        # from_pretrained would otherwise re-initialise a module whose shape does not match
        raise ValueError(f"{name_or_path}: the pruned weights do not match the layer shapes "
                         f"recorded in its config: {info}")
    return model


def model_class(config) -> type[T5ForConditionalGeneration]:
    """The class that rebuilds a saved model: a width-pruned one (NASH) records its shapes."""
    shaped = getattr(config, LAYER_SHAPES_KEY, None) is not None
    return ShapedT5ForConditionalGeneration if shaped else T5ForConditionalGeneration


def meta_model(name_or_path: str | Path, dtype: str = "fp32") -> T5ForConditionalGeneration:
    """The model ``load_model`` would give, built on the meta device: every shape and dtype, no
    memory and no weights read. For sizing before anything is loaded."""
    config = AutoConfig.from_pretrained(str(name_or_path))
    with torch.device("meta"):
        return model_class(config)(config).to(DTYPES[dtype])


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes the model's distinct parameters and buffers take (a tied lm_head counted once)."""
    # parameters() and buffers() already yield a shared tensor once
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def count_parameters(model: torch.nn.Module, *, include_lm_head: bool = False) -> int:
    """Distinct parameters (shared embeddings counted once); lm_head left out by default,
    as Table 1 of the asymmetry paper counts FLAN-T5 (small: 60,511,616)."""
    seen: set[int] = set()
    total = 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen or (not include_lm_head and name.startswith("lm_head.")):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


# ---------------------------------------------------------------------------------------------
# Structurally pruned encoders (NASH): per-layer attention heads and FFN widths.
#
# T5Config has one `num_heads` and one `d_ff`, so a model whose encoder layers lost different
# heads / FFN units cannot be described by the stock config. The shapes are recorded in the
# config under LAYER_SHAPES_KEY (saved in config.json by save_pretrained) and rebuilt by
# `ShapedT5ForConditionalGeneration.__init__` before from_pretrained loads the weights:
#
#   config.asymprune_layer_shapes = {"encoder": {"kept_heads": [[0, 2, 3], [], ...],
#                                                "d_ff": [30, 0, ...]}}
#
# kept_heads are indices into the teacher's heads (not counts): block 0 still computes the
# relative position bias for all `num_heads` heads and passes it down the stack, and each layer
# uses the slice for the heads it kept. The bias embedding itself is never pruned
# (num_buckets x num_heads, e.g. 32 x 12 = 384 parameters in T5-base).
# The pruning itself (which units, slicing the weights) is `asymprune.nash.prune`.
# ---------------------------------------------------------------------------------------------

LAYER_SHAPES_KEY = "asymprune_layer_shapes"


class HeadPrunedT5Attention(T5Attention):
    """Encoder self-attention that keeps ``kept_heads`` of the config's ``num_heads`` heads.

    Only for the (non-causal, cache-free) encoder: the decoder is pruned by whole blocks.
    A layer that kept no head adds nothing to the residual stream (its output is zero), but
    block 0 still computes and passes on the position bias the later layers need.
    """

    def __init__(self, config, kept_heads, has_relative_attention_bias: bool = False,
                 layer_idx: int | None = None):
        if config.is_decoder:
            raise ValueError("head pruning is implemented for encoder self-attention only")
        # builds q/k/v/o at full size and (block 0) the full num_buckets x num_heads bias
        super().__init__(config, has_relative_attention_bias=has_relative_attention_bias,
                         layer_idx=layer_idx, is_causal=False)
        self.kept_heads = _check_heads(kept_heads, config.num_heads)
        self.n_heads_full = config.num_heads
        self.n_heads = len(self.kept_heads)
        self.inner_dim = self.n_heads * self.key_value_proj_dim
        self.q = nn.Linear(self.d_model, self.inner_dim, bias=False)
        self.k = nn.Linear(self.d_model, self.inner_dim, bias=False)
        self.v = nn.Linear(self.d_model, self.inner_dim, bias=False)
        self.o = nn.Linear(self.inner_dim, self.d_model, bias=False)

    def forward(self, hidden_states, mask=None, key_value_states=None, position_bias=None,
                past_key_values=None, **kwargs):
        if key_value_states is not None or past_key_values is not None:
            raise ValueError("HeadPrunedT5Attention is encoder self-attention: no cross-attention "
                             "inputs and no KV cache")
        seq = hidden_states.shape[1]
        if position_bias is None:  # first block: the bias of *all* teacher heads, shared below
            if self.has_relative_attention_bias:
                position_bias = self.compute_bias(seq, seq, device=hidden_states.device)
            else:
                position_bias = hidden_states.new_zeros((1, self.n_heads_full, seq, seq))
        if self.n_heads == 0:
            return torch.zeros_like(hidden_states), position_bias, None
        own_bias = position_bias[:, list(self.kept_heads)]
        out, _, weights = super().forward(hidden_states, mask=mask, position_bias=own_bias, **kwargs)
        return out, position_bias, weights


def _check_heads(kept_heads, num_heads: int) -> tuple[int, ...]:
    kept = tuple(int(h) for h in kept_heads)
    if list(kept) != sorted(set(kept)) or any(not 0 <= h < num_heads for h in kept):
        raise ValueError(f"kept heads must be sorted, unique and in 0..{num_heads - 1}, got {kept}")
    return kept


def validate_layer_shapes(config, shapes) -> dict:
    """The recorded shapes, checked against the config; a ValueError names what is wrong."""
    if not isinstance(shapes, dict) or set(shapes) != {"encoder"}:
        raise ValueError(f"{LAYER_SHAPES_KEY} must be {{'encoder': {{...}}}} (only encoders are "
                         f"width-pruned), got keys {sorted(shapes) if isinstance(shapes, dict) else shapes!r}")
    enc = shapes["encoder"]
    if not isinstance(enc, dict) or set(enc) != {"kept_heads", "d_ff"}:
        raise ValueError(f"{LAYER_SHAPES_KEY}['encoder'] needs exactly 'kept_heads' and 'd_ff'")
    n = config.num_layers
    if len(enc["kept_heads"]) != n or len(enc["d_ff"]) != n:
        raise ValueError(f"{LAYER_SHAPES_KEY}: {len(enc['kept_heads'])} head lists and "
                         f"{len(enc['d_ff'])} FFN widths for {n} encoder layers")
    for i, width in enumerate(enc["d_ff"]):
        if not isinstance(width, int) or not 0 <= width <= config.d_ff:
            raise ValueError(f"{LAYER_SHAPES_KEY}: encoder layer {i} FFN width {width!r} is not "
                             f"in 0..{config.d_ff}")
    return {"encoder": {"kept_heads": [list(_check_heads(h, config.num_heads))
                                       for h in enc["kept_heads"]],
                        "d_ff": list(enc["d_ff"])}}


def apply_layer_shapes(model: T5ForConditionalGeneration, shapes) -> T5ForConditionalGeneration:
    """Replace each encoder layer's attention and FFN projections by modules of the recorded
    sizes (fresh, uninitialised weights: from_pretrained or `nash.prune` fills them) and record
    the shapes in ``model.config``. Returns ``model``."""
    shapes = validate_layer_shapes(model.config, shapes)
    with warnings.catch_warnings():
        # a layer that lost every head / unit gets 0-element weights; torch warns on their init
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        _build_layer_shapes(model, shapes)
    setattr(model.config, LAYER_SHAPES_KEY, shapes)
    return model


def _build_layer_shapes(model, shapes) -> None:
    stack = model.encoder
    for i, block in enumerate(stack.block):
        old = block.layer[0].SelfAttention
        block.layer[0].SelfAttention = HeadPrunedT5Attention(
            stack.config, shapes["encoder"]["kept_heads"][i],
            has_relative_attention_bias=old.has_relative_attention_bias, layer_idx=old.layer_idx)
        ff = block.layer[-1].DenseReluDense
        width, d_model = shapes["encoder"]["d_ff"][i], model.config.d_model
        for name in ("wi_0", "wi_1", "wi"):
            if hasattr(ff, name):
                setattr(ff, name, nn.Linear(d_model, width, bias=False))
        ff.wo = nn.Linear(width, d_model, bias=False)
        # new modules start in training mode; an eval()-mode model must not get dropout back
        block.train(block.training)


class ShapedT5ForConditionalGeneration(T5ForConditionalGeneration):
    """T5 whose encoder layers have the per-layer widths recorded in its config."""

    def __init__(self, config):
        super().__init__(config)
        apply_layer_shapes(self, getattr(config, LAYER_SHAPES_KEY))
