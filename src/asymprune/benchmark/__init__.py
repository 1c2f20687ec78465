"""Time generation of several variants of one model, interleaved (protocol: docs/benchmark.md).

One job times every variant of a size/dataset (or of a FLAN-T5 architecture), so that the
ratios it reports cannot be skewed by something that happened between two jobs:

  --model VARIANT=DIR ...        trained or pruned model folders (save_pretrained + tokenizer)
  --arch SIZE --variants e6d6 e3d6 ...
                                 the exact FLAN-T5 architecture cut to each depth, random
                                 weights (seeded), no training: every variant's speedup for free

Cells (each timed for every variant and engine): protocol x mode x batch size.
  fixed    min_new_tokens == max_new_tokens == new_tokens, asserted on every output: every
           variant decodes the same number of steps, so a latency ratio is an architecture ratio
  natural  EOS allowed, up to max_new_tokens (the paper's setting); the mean generated length is
           recorded, since a variant that stops earlier is faster for that reason alone
  engines  eager (transformers generate, dynamic cache), compiled (static cache and a
           torch.compile'd decoding step, asymprune.compiled_engine; greedy only) and
           ct2-<compute type>
           (CTranslate2, asymprune.ct2: the model's export, --ct2-model VARIANT=DIR, or with
           --arch an export made here; quantized to the compute type when loaded, with as many
           threads as torch)
  protocol paper (greedy, the configured batch sizes) and, with nash_protocol, NASH's own
           setting: beam search 4, batch 32, natural length, eager (labelled "nash")

Inputs (``inputs``): ``real`` (default, the paper's protocol) takes test documents, truncates
each to source_tokens and pads a batch to its longest document; each timed round uses another
batch (round r takes documents r*b .. r*b+b-1), so natural mode at batch 1 averages over
``runs`` documents. ``repeated`` repeats each document to exactly source_tokens (architecture
studies: every row costs the encoder the same). ``--arch`` models get random tokens of exactly
source_tokens (fixed mode only: random weights have no natural length).

Timing: warm-up runs per (variant, engine) first (the compiled engine compiles there), then
``runs`` rounds; round r times every (variant, engine) pair once, in an order rotated by r
(pair i goes at position (i - r) mod P), so slow drift of the machine hits all variants and
engines alike. Peak memory is recorded per (variant, engine): the most any one timed run added
on top of what was resident before it (CUDA: torch's allocator, so not for CTranslate2, which
allocates outside it; CPU: the process's resident set, VmHWM after glibc's malloc_trim and a
reset through /proc/self/clear_refs; elsewhere a lower bound). On CUDA the device is
synchronized before the clock starts and stops. Each cell stores its raw runs, the spread
(max - min) / median of their time per decoding step (natural mode stops each document after
other lengths; see ``timing.summarize``) and the foreign load: the share of the CPU time of the
CPUs this job may run on (``os.sched_getaffinity``; /proc/stat per CPU, minus this process)
that other processes used. Whether a cell was disturbed is the report's judgement
(``report.max_spread``, ``report.max_foreign_load``): a threshold never reruns a timing.

Modules: ``inputs`` (what is generated from), ``timing`` (the interleaved rounds, /proc
foreign-load accounting, memory), ``stage`` (command line, models, sidecars).

  python -m asymprune.benchmark --arch small --variants e6d6 e6d3 e6d1 --device cuda \\
      --output-dir bench_arch/cuda/small
  python -m asymprune.benchmark --model e6d6=results/demo/models/tiny/news/e6d6/model \\
      --model e6d3=results/demo/models/tiny/news/e6d3/model \\
      --data-file results/demo/data/news/test.jsonl --size tiny --dataset news \\
      --device cpu --output-dir bench/cpu/tiny/news
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """The stage entry point. Imported lazily, like ``asymprune.nash``; the import statement
    also lets ``provenance.stage_code_hash("benchmark")`` find, and hash, the stage's code."""
    from asymprune.benchmark.stage import main as stage_main

    return stage_main(argv)
