"""The compiled engine: greedy generation with a static KV cache and one ``torch.compile``d
decoding step (``asymprune.engine.generate_with("compiled", ...)`` dispatches here).

``generate_compiled`` returns the same tokens as ``asymprune.generation.generate`` (HF
``model.generate``, greedy) in the same layout: column 0 is the decoder start token, a row that
emitted EOS is padded with ``pad_token_id`` after it, and decoding stops once every row has
emitted EOS (or after ``max_new_tokens``).

Why it is faster: HF's eager loop pays Python for every token (logits processors, stopping
criteria, mask building, a ``DynamicCache`` that grows by ``torch.cat``). Here the encoder runs
once (eagerly: it is a few large matmuls, nothing to gain from compiling), the cross-attention
K/V are projected once into fixed buffers, and each token is one call of a compiled graph that
does embedding -> every decoder block -> lm_head -> EOS suppression -> argmax -> cache and
output writes, all in place on preallocated tensors. The host only loops and reads one bool
(all rows done?) per ``sync_every`` steps. On CUDA the graph is captured as a CUDA graph
(``mode="reduce-overhead"``), so a step is a single graph launch.

The step is written here against the T5 modules' weights (layer norms, q/k/v/o, FFN, lm_head)
rather than calling ``T5Stack.forward``: the static cache is plain tensors, and the per-step
position bias is one row of a table. It follows ``modeling_t5`` (transformers 5) operation for
operation; the tests check token identity with the eager path.

Depth and width: the caches are sized from the *decoder* (``len(model.decoder.block)``, heads
per decoder attention), never from ``config.num_layers`` (the encoder depth, see docs/transformers-notes.md),
so e1d6-style models work. A width-pruned encoder (``ShapedT5ForConditionalGeneration``) is
only ever run through its own eager forward, so its per-layer head counts need nothing here.
"""

from __future__ import annotations

import copy
import itertools
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# The logits processors of HF's greedy loop that the compiled step implements: EOS banned
# until min_new_tokens tokens exist. transformers itself says which processors a model's
# generation_config adds (``_hf_processors``); any other one makes the compiled engine refuse
# the model, since its tokens would differ from eager's.
_IMPLEMENTED_PROCESSORS = frozenset({"MinNewTokensLengthLogitsProcessor"})
# Stopping criteria beyond max_new_tokens and EOS (not logits processors), with their neutral
# value: the compiled step has none of them either.
_NEUTRAL_STOPPING: dict[str, Any] = {"max_time": None, "stop_strings": None}

# Bytes of static buffers (KV caches, cross-attention K/V, outputs) the cached runners may hold
# over all models together; the least recently used runner goes first beyond it. FLAN-T5-large
# at batch 16, 1024 source and 256 new tokens holds 24 layers x 16 x (2 x 1024 + 2 x 256) x
# 1024 x 4 bytes = 4 GiB: 8 GiB keeps two such shapes, or every shape of a CPU benchmark.
RUNNER_CACHE_BYTES = 8 * 2**30

# Each (decoder structure, shape) compiles one entry on the code object of _DecodeStep.forward,
# which every runner shares. dynamo's default limit is 8 entries per code object (256 over all
# code objects), after which it silently runs eager. One benchmark job times every variant of
# a size/dataset: e.g. the demo's 6 decoder depths x 3 batch sizes x 2 output lengths x up to 2
# source buckets = 72 entries; the paper grid's 6 depths x 3 x 2 x up to 16 buckets = 576.
# Allow 1024 (4096 overall) and make hitting a limit an error instead of a silent fallback.
_DYNAMO_PATCH = dict(recompile_limit=1024, accumulated_recompile_limit=4096,
                     fail_on_recompile_limit_hit=True)

# The source length the compiled step is specialised to is the batch's length rounded up to a
# multiple of this: cross-attention runs over the extra slots, masked (their keys and values are
# zero and their bias is the dtype's min, so softmax gives them weight exactly 0). Without it,
# every distinct padded batch width compiles anew (an XSUM test set batched by 32 has hundreds);
# with it, sources truncated to 1024 tokens need at most 1024 / 64 = 16 shapes per batch size,
# for at most 63 wasted slots (6 % of a 1024-token source).
SOURCE_BUCKET = 64


def _hf_processors(model, input_ids: torch.Tensor, max_new_tokens: int,
                   min_new_tokens: int | None) -> tuple[list[str], int]:
    """The logits processors transformers would build for greedy decoding of this model with
    these arguments (class names), and the min_new_tokens it would apply (the argument, else
    the model's generation_config, else 0)."""
    gc = copy.deepcopy(model.generation_config)
    gc.update(max_new_tokens=max_new_tokens, num_beams=1, do_sample=False,
              **({} if min_new_tokens is None else {"min_new_tokens": min_new_tokens}))
    # sets the EOS tensors the min-length processors need, as generate() does
    model._prepare_special_tokens(gc, True, device=input_ids.device)
    processors = model._get_logits_processor(generation_config=gc, input_ids_seq_length=1,
                                             encoder_input_ids=input_ids,
                                             device=input_ids.device)
    return [type(p).__name__ for p in processors], int(gc.min_new_tokens or 0)


@torch.inference_mode()
def generate_compiled(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *,
                      max_new_tokens: int, min_new_tokens: int | None = None,
                      sync_every: int | None = None) -> torch.Tensor:
    """Greedy generation, token-identical to ``generation.generate(..., num_beams=1)``.

    Returns (batch, 1 + n) token ids, n <= ``max_new_tokens``. ``sync_every``: read the
    "all rows done?" flag every that many steps (default 1 on CPU, where the read is free, 8 on
    CUDA, where it stalls the launch queue); the extra steps after the last EOS only write
    padding and are cut off, so the result does not depend on it.

    The first call for a (model, batch, source bucket, max_new_tokens) compiles the step; later
    calls with the same shapes reuse it. A new shape recompiles (static shapes:
    ``dynamic=False``, so every shape gets its specialised kernels; the source length counts in
    buckets of ``SOURCE_BUCKET`` tokens). Measured on 2 CPU cores,
    FLAN-T5-small: ~21 s for the first decoder depth with an empty inductor cache, 0.5-3.5 s
    for further depths (the per-layer C++ kernels are cached on disk and shared); another model
    whose decoder has the same structure and shapes (e.g. e1d6 after e6d6: both keep 8 decoder
    blocks) reuses the compiled graph outright.
    """
    if model.training:
        raise ValueError("generate_compiled needs model.eval(): dropout would make eager and "
                         "compiled decoding differ")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if min_new_tokens is not None and min_new_tokens < 0:
        raise ValueError(f"min_new_tokens must be >= 0, got {min_new_tokens}")
    processors, min_new_tokens = _hf_processors(model, input_ids, max_new_tokens, min_new_tokens)
    missing = sorted(set(processors) - _IMPLEMENTED_PROCESSORS)
    if missing:
        raise ValueError(f"the compiled engine implements plain greedy decoding with "
                         f"min_new_tokens only; transformers would add {missing} for this "
                         f"model's generation_config ({model.generation_config.to_diff_dict()})"
                         f": decode it with --engine eager")
    device = input_ids.device
    if sync_every is None:
        sync_every = 1 if device.type == "cpu" else 8
    if sync_every < 1:
        raise ValueError(f"sync_every must be >= 1, got {sync_every}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    tokens = _special_tokens(model)
    batch, src_len = input_ids.shape
    capacity = -(-src_len // SOURCE_BUCKET) * SOURCE_BUCKET  # ceil to the bucket: 374 -> 384
    runner = _runner(model, batch, capacity, max_new_tokens, tokens)

    enc = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    runner.reset(enc, attention_mask, min_new_tokens)
    state = runner.state
    with torch._dynamo.config.patch(**_dynamo_patch()):
        for t in range(max_new_tokens):
            runner.compiled()
            if (t + 1) % sync_every == 0 and bool(state.finished.all()):
                break
    if runner.cuda and not runner.graphs_checked:
        runner.check_cuda_graphs()
    # n_done counts the steps HF would have run: those that began with a row still unfinished.
    n_done = int(state.n_done)
    return state.out[:, :1 + n_done].clone()  # out is reused by the next call


def _dynamo_patch(config=None) -> dict[str, Any]:
    """``_DYNAMO_PATCH``, or a clear error on a torch without those settings (before 2.7)."""
    config = torch._dynamo.config if config is None else config
    missing = [k for k in _DYNAMO_PATCH if not hasattr(config, k)]
    if missing:
        raise RuntimeError(f"the compiled engine needs torch >= 2.7 (dynamo settings "
                           f"{missing}); this is torch {torch.__version__}")
    return _DYNAMO_PATCH


def _special_tokens(model) -> dict[str, Any]:
    """decoder start, pad and EOS ids resolved as HF ``generate`` does, and a check that the
    generation config sets no stopping criterion the compiled step leaves out."""
    gc, cfg = model.generation_config, model.config
    active = {name: getattr(gc, name) for name, neutral in _NEUTRAL_STOPPING.items()
              if getattr(gc, name, None) not in (None, neutral)}
    if active:
        raise ValueError(f"the compiled engine stops at EOS and max_new_tokens only; this "
                         f"model's generation_config sets {active}")

    def first(*values):
        return next((v for v in values if v is not None), None)

    eos = first(gc.eos_token_id, cfg.eos_token_id)
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    # HF: pad falls back to the first EOS; decoder start falls back to BOS.
    pad = first(gc.pad_token_id, cfg.pad_token_id, eos[0] if eos else None)
    start = first(gc.decoder_start_token_id, cfg.decoder_start_token_id, gc.bos_token_id)
    if start is None:
        raise ValueError("decoder_start_token_id or bos_token_id has to be defined")
    if pad is None:
        raise ValueError("pad_token_id or eos_token_id has to be defined to pad finished rows")
    return {"start": int(start), "pad": int(pad), "eos": tuple(int(e) for e in eos)}


class _LayerCache(nn.Module):
    """One decoder layer's static caches: self-attention K/V over the max_new_tokens decoder
    positions, cross-attention K/V over the ``src_cap`` source slots (the batch's source
    length rounded up to ``SOURCE_BUCKET``; written once per call)."""

    def __init__(self, batch, heads, d_kv, max_len, src_cap, dtype, device):
        super().__init__()
        for name, length in (("k", max_len), ("v", max_len), ("ck", src_cap), ("cv", src_cap)):
            self.register_buffer(name, torch.zeros(batch, heads, length, d_kv, dtype=dtype,
                                                   device=device), persistent=False)


class _DecodeStep(nn.Module):
    """One greedy decoding step of a T5 decoder, all state in buffers, updated in place.

    Reads ``token`` at position ``pos``, writes K/V at ``pos``, writes the argmax token into
    ``out[:, pos + 1]`` and ``token``, updates ``finished`` / ``n_done``, and advances ``pos``.
    Holds references to the model's own modules (no weight copies).
    """

    def __init__(self, model, batch: int, src_cap: int, max_new: int, tokens: dict[str, Any]):
        super().__init__()
        dec = model.decoder
        param = next(model.parameters())
        dtype, device = param.dtype, param.device
        self.embed = dec.embed_tokens
        self.blocks = dec.block
        self.final_norm = dec.final_layer_norm
        self.lm_head = model.lm_head
        # FLAN-T5 / v1.1: scale_decoder_outputs is False; original T5 (tied) scales by
        # d_model ** -0.5 before the tied lm_head (T5ForConditionalGeneration.forward).
        self.out_scale = (model.config.d_model ** -0.5 if model.config.scale_decoder_outputs
                          else None)
        self.pad = tokens["pad"]
        self.start = tokens["start"]
        attn0 = dec.block[0].layer[0].SelfAttention  # block 0 owns the relative bias
        self.rel_bias = attn0.relative_attention_bias
        self.min_value = torch.finfo(dtype).min
        self.caches = nn.ModuleList(
            _LayerCache(batch, b.layer[0].SelfAttention.n_heads,
                        b.layer[0].SelfAttention.key_value_proj_dim, max_new, src_cap,
                        dtype, device)
            for b in dec.block)

        def buf(name, value):
            self.register_buffer(name, value, persistent=False)

        # Position bias of query position q over key position k: the bucket of k - q (causal:
        # bidirectional=False), exactly what compute_bias(1, q + 1, past_seen_tokens=q) looks
        # up at step q in the eager path. One (L, L) table, one row per step.
        q_pos = torch.arange(max_new, device=device)
        rel = q_pos[None, :] - q_pos[:, None]
        buf("buckets", attn0._relative_position_bucket(
            rel, bidirectional=False, num_buckets=attn0.relative_attention_num_buckets,
            max_distance=attn0.relative_attention_max_distance))
        buf("causal", rel <= 0)  # key k visible from query q iff k <= q
        eos_mask = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=device)
        eos_mask[list(tokens["eos"])] = True
        buf("eos_mask", eos_mask)
        buf("enc_bias", torch.zeros(batch, 1, 1, src_cap, dtype=dtype, device=device))
        buf("token", torch.zeros(batch, 1, dtype=torch.long, device=device))
        buf("pos", torch.zeros(1, dtype=torch.long, device=device))
        buf("min_new", torch.zeros(1, dtype=torch.long, device=device))
        buf("finished", torch.zeros(batch, dtype=torch.bool, device=device))
        buf("n_done", torch.zeros(1, dtype=torch.long, device=device))
        buf("out", torch.zeros(batch, 1 + max_new, dtype=torch.long, device=device))

    def forward(self) -> None:
        pos = self.pos
        x = self.embed(self.token)  # (B, 1, d_model)
        batch = x.shape[0]
        # (1, L, H) -> (1, H, 1, L); future keys get the dtype's min (sdpa additive mask).
        bias = self.rel_bias(self.buckets.index_select(0, pos)).permute(2, 0, 1).unsqueeze(0)
        bias = torch.where(self.causal.index_select(0, pos), bias, self.min_value)
        for block, cache in zip(self.blocks, self.caches):
            sa = block.layer[0]
            attn = sa.SelfAttention
            h = sa.layer_norm(x)
            q = _heads(attn.q(h), attn)
            cache.k.index_copy_(2, pos, _heads(attn.k(h), attn))
            cache.v.index_copy_(2, pos, _heads(attn.v(h), attn))
            a = F.scaled_dot_product_attention(q, cache.k, cache.v, attn_mask=bias, scale=1.0)
            x = _clamp_fp16(x + attn.o(a.transpose(1, 2).reshape(batch, 1, -1)))
            ca = block.layer[1]
            cross = ca.EncDecAttention
            q = _heads(cross.q(ca.layer_norm(x)), cross)
            a = F.scaled_dot_product_attention(q, cache.ck, cache.cv, attn_mask=self.enc_bias,
                                               scale=1.0)
            x = _clamp_fp16(x + cross.o(a.transpose(1, 2).reshape(batch, 1, -1)))
            x = _clamp_fp16(block.layer[-1](x))  # T5LayerFF: norm, FFN, residual
        x = self.final_norm(x)
        if self.out_scale is not None:
            x = x * self.out_scale
        logits = self.lm_head(x)[:, -1].float()  # HF takes float32 logits of the last position
        # MinNewTokensLengthLogitsProcessor: the step at position pos makes new token pos + 1,
        # so pos tokens exist; EOS is banned while pos < min_new_tokens.
        logits = torch.where(self.eos_mask & (pos < self.min_new), float("-inf"), logits)
        nxt = torch.where(self.finished, self.pad, logits.argmax(-1))
        self.n_done.add_((~self.finished).any().long())
        self.finished.logical_or_(self.eos_mask[nxt])
        self.out.index_copy_(1, pos + 1, nxt.unsqueeze(1))
        self.token.copy_(nxt.unsqueeze(1))
        pos.add_(1)


def _heads(x: torch.Tensor, attn) -> torch.Tensor:
    """(B, T, H * d_kv) -> (B, H, T, d_kv)."""
    return x.view(x.shape[0], x.shape[1], -1, attn.key_value_proj_dim).transpose(1, 2)


def _clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    """T5Block's fp16 guard against inf after each sub-layer (no-op for fp32 / bf16)."""
    if x.dtype != torch.float16:
        return x
    big = torch.finfo(torch.float16).max
    limit = torch.where(torch.isinf(x).any(), big - 1000, big)
    return torch.clamp(x, min=-limit, max=limit)


class _Runner:
    """A compiled step and its state for one (model structure, shape) key."""

    def __init__(self, model, batch, src_cap, max_new, tokens):
        from torch._dynamo.utils import counters

        self.state = _DecodeStep(model, batch, src_cap, max_new, tokens)
        # the static buffers this runner owns (not the model's weights it refers to)
        self.nbytes = (sum(b.nbytes for b in self.state.buffers(recurse=False))
                       + sum(b.nbytes for c in self.state.caches for b in c.buffers()))
        self.last_used = 0
        cuda = self.state.out.device.type == "cuda"
        self.cuda, self.graphs_checked, self.cuda_graphs = cuda, False, None
        # inductor counts every function it could not turn into a CUDA graph
        self._skips_before = counters["inductor"]["cudagraph_skips"]
        if cuda:
            # CUDA graphs bake buffer addresses into the graph and only allow in-place
            # mutation of inputs whose address is static: the state is allocated once per key
            # and reset in place, never reallocated.
            for buf in self.state.buffers():
                torch._dynamo.mark_static_address(buf)
        # fullgraph: a graph break raises instead of silently running part of the step eagerly
        self.compiled = torch.compile(self.state, fullgraph=True, dynamic=False,
                                      mode="reduce-overhead" if cuda else None)

    def check_cuda_graphs(self) -> None:
        """After the first call on CUDA: the step must have become a CUDA graph. inductor
        only logs a warning when it skips one (a CPU tensor, a dynamic shape, a mutated input
        without a static address), and each step would then launch its ~20 kernels per layer
        one by one; this makes that an error and records the proof (``cuda_graphs``)."""
        from torch._dynamo.utils import counters

        skipped = counters["inductor"]["cudagraph_skips"] - self._skips_before
        self.graphs_checked = True
        self.cuda_graphs = check_cuda_graphs(skipped, cudagraph_functions(self.state.out.device))

    def reset(self, enc: torch.Tensor, attention_mask: torch.Tensor, min_new: int) -> None:
        """Load one batch: cross-attention K/V of its encoder output into the first
        ``src_len`` source slots (the rest of the bucket zeroed and masked), empty
        self-attention caches, the start token at position 0."""
        s = self.state
        batch, src_len = attention_mask.shape
        for block, cache in zip(s.blocks, s.caches):
            cross = block.layer[1].EncDecAttention
            # Zeros, not stale values, in the bucket's spare slots and the unwritten
            # self-attention slots: they are masked, but 0 * NaN would still be NaN.
            for buf in (cache.ck, cache.cv, cache.k, cache.v):
                buf.zero_()
            cache.ck[:, :, :src_len].copy_(_heads(cross.k(enc), cross))
            cache.cv[:, :, :src_len].copy_(_heads(cross.v(enc), cross))
        # sdpa additive mask for padded source positions (HF: where(mask, 0, dtype min)), and
        # for the bucket's slots past the batch's length
        s.enc_bias.fill_(s.min_value)
        s.enc_bias[..., :src_len].copy_(torch.where(attention_mask.bool(), 0.0, s.min_value)
                                        .view(batch, 1, 1, src_len))
        s.token.fill_(s.start)
        s.out.fill_(s.pad)
        s.out[:, 0] = s.start
        s.pos.zero_()
        s.min_new.fill_(min_new)
        s.finished.zero_()
        s.n_done.zero_()


def cudagraph_functions(device: torch.device) -> int | None:
    """How many functions inductor's CUDA-graph tree manager of ``device`` holds (each one
    recorded as a graph), or None where this torch keeps it elsewhere."""
    try:
        from torch._inductor import cudagraph_trees

        manager = cudagraph_trees.get_container(device.index or 0).tree_manager
        return 0 if manager is None else len(manager.ids_to_funcs)
    except (ImportError, AttributeError):
        return None


def check_cuda_graphs(skipped: int, functions: int | None) -> bool:
    """True when inductor skipped no CUDA graph and (where torch says) holds at least one;
    a RuntimeError otherwise."""
    if skipped or functions == 0:
        raise RuntimeError(f"the compiled step was not captured as a CUDA graph (inductor "
                           f"skipped {skipped} graph(s); graph functions held: {functions}); "
                           f"every decoding step would launch its kernels one by one. Run "
                           f"with TORCH_LOGS=perf_hints to see why")
    return True


# model -> {key: _Runner}; weak so a dropped model frees its buffers and compiled step.
_RUNNERS: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, _Runner]]" = (
    weakref.WeakKeyDictionary())
_USES = itertools.count(1)


def cached_runner_bytes() -> int:
    return sum(r.nbytes for per in _RUNNERS.values() for r in per.values())


def _runner(model, batch: int, src_cap: int, max_new: int, tokens: dict[str, Any]) -> _Runner:
    param = next(model.parameters())
    # Module ids: block surgery on the same model object must not reuse a stale step.
    structure = (tuple(map(id, model.decoder.block)), id(model.lm_head),
                 id(model.decoder.embed_tokens))
    key = (structure, batch, src_cap, max_new, param.device, param.dtype,
           tokens["start"], tokens["pad"], tokens["eos"])
    per_model = _RUNNERS.setdefault(model, {})
    # The model changed under us (blocks replaced): runners of its old structure can never be
    # used again, and hold references to the old blocks. Free them.
    for stale in [k for k in per_model if k[0] != structure]:
        del per_model[stale]
    if key not in per_model:
        per_model[key] = _Runner(model, batch, src_cap, max_new, tokens)
        _evict(keep=per_model[key])
    per_model[key].last_used = next(_USES)
    return per_model[key]


def _evict(keep: _Runner, limit: int | None = None) -> None:
    """Drop the least recently used runners (of any model) until the cache holds at most
    ``limit`` bytes (``RUNNER_CACHE_BYTES``); the runner about to be used stays."""
    limit = RUNNER_CACHE_BYTES if limit is None else limit
    entries = [(r.last_used, id(r), per, k) for per in _RUNNERS.values()
               for k, r in per.items() if r is not keep]
    total = cached_runner_bytes()
    for _, _, per, k in sorted(entries, key=lambda e: e[:2]):
        if total <= limit:
            break
        total -= per[k].nbytes
        del per[k]
