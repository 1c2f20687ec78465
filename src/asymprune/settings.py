"""Stage settings: one dataclass per stage, the single home of each setting's type, bounds,
default and help text, and the constants their choices come from (pure Python: the workflow
imports it while Snakemake parses).

What is derived from these classes (the config schema's blocks, each stage's flags, validation
with messages naming config keys) is made in ``asymprune.settings_io``. A stage gets its
settings as one of these frozen objects (``settings_io.parse``) and passes it on.

Values resolve as: dataclass default < ``--settings`` JSON < explicit flags. How the config
blocks layer over each other (``finetune`` < ``refinetune``, ``nash.finetune``) is written in
``config.yaml`` and the schema's descriptions, and built in ``asymprune.workflow_config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from asymprune import flan_t5
from asymprune.settings_io import SettingsError, setting  # noqa: F401 (SettingsError: re-export)

SPLITS = ("train", "validation", "test")
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULERS = ("constant", "linear", "cosine", "constant_with_warmup")
KL_DIRECTIONS = ("teacher_student", "student_teacher")
BENCH_MODES = ("fixed", "natural")
# CTranslate2's compute types (its own names), by the device that can run them: int8 and
# float32 kernels exist on every x86/ARM CPU; the 16-bit ones need CUDA (bfloat16: compute
# capability >= 8.0, which ctranslate2.get_supported_compute_types says at run time).
CT2_COMPUTE_TYPES_BY_DEVICE = {
    "cpu": ("float32", "int8_float32", "int8"),
    "cuda": ("float32", "int8_float32", "int8", "float16", "bfloat16", "int8_float16",
             "int8_bfloat16"),
}
CT2_COMPUTE_TYPES = CT2_COMPUTE_TYPES_BY_DEVICE["cuda"]
# eager: transformers generate; compiled: asymprune.engine; ct2-<type>: CTranslate2 at that
# compute type (asymprune.ct2)
ENGINES = ("eager", "compiled") + tuple(f"ct2-{t}" for t in CT2_COMPUTE_TYPES)


def engine_problems(engines: list[str], device: str, key: str = "engines"
                    ) -> list[tuple[str, str]]:
    """A CTranslate2 compute type ``device`` cannot run, e.g. ct2-float16 on a CPU."""
    ok = CT2_COMPUTE_TYPES_BY_DEVICE[device]
    bad = [e for e in engines if e.startswith("ct2-") and e[len("ct2-"):] not in ok]
    if bad:
        return [(key, f"{bad} cannot run on {device}; on {device} CTranslate2 runs "
                      f"{['ct2-' + t for t in ok]}")]
    return []
BENCH_INPUTS = ("real", "repeated")
DATA_KINDS = ("hub", "local", "generated")
DATA_FORMATS = ("jsonl", "json", "csv", "parquet")
# which checkpoint of a training run goes on: the last step, or the validation-best
CHECKPOINT_SELECTIONS = ("last", "best")
# padding of the labels: ignore (-100, left out of every loss) or pad (the tokenizer's pad id,
# 0 for T5: padding counts in the cross-entropy, as in NASH's released data code)
LABEL_PADDINGS = ("ignore", "pad")


# ---------------------------------------------------------------------------------------------
# the stages' settings


@dataclass(frozen=True, kw_only=True)
class Optimisation:
    """What every training stage shares: the fields both ``Training`` and ``NashTrain`` have
    with one meaning, default and help, and the batch arithmetic they check alike. (The
    others, e.g. ``learning_rate``, are in both with their own default and the paper it comes
    from.)"""

    max_steps: int = setting(-1, "optimizer steps; > 0 overrides epochs")
    max_train_samples: Optional[int] = setting(None, "first N training examples (null = all)",
                                               ge=1)
    save_steps: int = setting(500, "checkpoint interval in optimizer steps", ge=1)
    logging_steps: int = setting(50, "log interval in optimizer steps", ge=1)
    selection_samples: int = setting(200, "best: first N validation examples scored", ge=1)

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) per contradiction; ``@name`` in a message becomes the config key
        of field ``name`` (it may come from another block)."""
        # fields of the subclasses: each has both, with its own default
        effective, per_device = self.effective_batch_size, self.per_device_batch_size
        if effective % per_device:
            return [("effective_batch_size",
                     f"{effective} is not a multiple of @per_device_batch_size {per_device} "
                     f"(effective = per-device x accumulation x GPUs)")]
        return []


@dataclass(frozen=True, kw_only=True)
class Training(Optimisation):
    """Fine-tuning (``finetune``; ``refinetune`` and ``nash.finetune`` override some keys).
    Defaults: Campos & Zhai Table 12."""

    epochs: float = setting(3.0, "training epochs (fractions allowed)", gt=0)
    learning_rate: float = setting(1.0e-4, "AdamW learning rate", gt=0)
    lr_scheduler: str = setting("constant", "learning-rate schedule", choices=SCHEDULERS)
    warmup_steps: int = setting(0, "linear learning-rate warm-up steps", ge=0)
    weight_decay: float = setting(0.01, "AdamW weight decay", ge=0)
    effective_batch_size: int = setting(
        64, "examples per optimizer step = per_device_batch_size x accumulation x GPUs", ge=1)
    per_device_batch_size: int = setting(8, "examples per forward pass on one device", ge=1)
    precision: str = setting("bf16", "mixed precision of training (fp16 needs CUDA)",
                             choices=PRECISIONS)
    seed: int = setting(42, "seed of weights init (from scratch), data order and dropout")
    max_source_length: int = setting(1024, "source tokens kept (truncation)", ge=8)
    max_target_length: int = setting(256, "target tokens kept (truncation)", ge=4)
    max_eval_samples: int = setting(1000, "validation examples for the final eval loss", ge=1)
    checkpoint_selection: str = setting(
        "last", "which model goes on: last = after the last step; best = the checkpoint with "
                "the highest ROUGE-L on selection_samples validation examples (greedy), scored "
                "every eval_steps from the first (the Trainer's load_best_model_at_end, as "
                "NASH's released final fine-tune)", choices=CHECKPOINT_SELECTIONS)
    eval_steps: int = setting(500, "best: steps between validation scores (save_steps must be "
                                   "a multiple of it: the Trainer reloads a saved checkpoint)",
                              ge=1)
    label_padding: str = setting(
        "ignore", "label padding: ignore (-100, out of the loss) or pad (the pad id, which "
                  "then counts in the cross-entropy, as NASH's released code)",
        choices=LABEL_PADDINGS)

    def problems(self) -> list[tuple[str, str]]:
        out = super().problems()
        if self.checkpoint_selection == "best" and self.save_steps % self.eval_steps:
            out.append(("save_steps", f"{self.save_steps} is not a multiple of @eval_steps "
                                      f"{self.eval_steps}: checkpoint_selection best reloads "
                                      f"the best saved checkpoint"))
        return out


PREDICTION_LOSSES = ("kl", "ce")


@dataclass(frozen=True, kw_only=True)
class NashTrain(Optimisation):
    """NASH pruning-aware training with distillation. Defaults: NASH Table 8 (XSum, CNN/DM)
    where it says, else the authors' released code (run_NASH.sh, L0Module, NashTrainer)."""

    epochs: float = setting(3.0, "training epochs (Table 8: 3 for XSum and CNN/DM)", gt=0)
    effective_batch_size: int = setting(
        4, "examples per optimizer step = per_device_batch_size x accumulation x GPUs "
           "(Table 8: 4)", ge=1)
    per_device_batch_size: int = setting(4, "examples per forward pass on one device", ge=1)
    learning_rate: float = setting(3.0e-5, "weights, AdamW (Table 8)", gt=0)
    lr_scheduler: str = setting(
        "linear", "schedule of the weights' learning rate (released code: linear to 0; the "
                  "gates and the multipliers keep theirs)", choices=SCHEDULERS)
    warmup_steps: int = setting(0, "linear learning-rate warm-up steps of the weights", ge=0)
    weight_decay: float = setting(0.0, "weights only", ge=0)
    max_grad_norm: float = setting(1.0, "clip the weights' gradient norm (0 = off)", ge=0)
    freeze_embeddings: bool = setting(
        True, "keep the shared token embedding fixed (released run_NASH.sh: "
              "--freeze_embeddings; a tied lm_head is the same tensor)")
    reg_learning_rate: float = setting(
        0.01, "Lagrange multipliers, gradient ascent (Table 8: 0.01)", gt=0)
    gate_learning_rate: Optional[float] = setting(
        None, "gate log_alpha, AdamW (null = reg_learning_rate, as the released code)", gt=0)
    head_gate_init_log_alpha: float = setting(
        10.0, "initial log_alpha of every head gate (released L0Module: 10, keep probability "
              "0.99999: heads start on)")
    ffn_gate_init_droprate: float = setting(
        0.5, "initial log_alpha of every FFN-unit gate = log(1-p) - log(p) (released "
             "L0Module: droprate_init 0.5 -> 0, keep probability 0.832)", gt=0, lt=1)
    gate_temperature: float = setting(
        2 / 3, "beta of the hard-concrete gates (Louizos et al. and the released code: 2/3; "
               "NASH appendix B writes the beta = 1 case)", gt=0)
    log_alpha_limit: float = setting(
        4.605170185988092, "log_alpha is clamped to [-this, this] after every gate update "
                           "(released L0Module: ln 100 = 4.605, keep probability 0.047..0.998)",
        gt=0)
    sparsity_warmup_fraction: float = setting(
        0.3333, "share of the steps over which the target rises linearly from 0 (released "
                "run_NASH.sh, XSum and CNN/DM: 1 of 3 epochs; Table 8 says 2)", ge=0, le=1)
    sparsity_tolerance: float = setting(
        0.005, "l0: the deterministic mask is adjusted until |reached - target| <= this",
        gt=0, lt=0.01)
    gate_miss_tolerance: float = setting(
        0.02, "l0: the sidecar's gates_missed_target is true when the gates' own expected "
              "sparsity ends further than this from the target", gt=0, lt=1)
    prediction_loss: str = setting(
        "kl", "L_pred: kl = KL to the teacher (paper section 4.3); ce = the student's "
              "cross-entropy on the labels (what the released trainer's training_step "
              "optimises: its KL code is never called)", choices=PREDICTION_LOSSES)
    distill_enc: float = setting(0.001, "lambda_enc, encoder hidden-state MSE (Table 8)", ge=0)
    distill_dec: float = setting(0.001, "lambda_dec, decoder hidden-state MSE (Table 8)", ge=0)
    kl_temperature: float = setting(
        2.0, "temperature T of the KL distillation, times T^2 (released run_NASH.sh: "
             "distill_temp=2)", gt=0)
    kl_direction: str = setting(
        "teacher_student", "KL(teacher||student), the usual distillation and the released "
        "code's; or the paper's literal KLD(f||g), f the student", choices=KL_DIRECTIONS)
    max_source_length: int = setting(512, "source tokens kept (Table 8: 512)", ge=8)
    max_target_length: int = setting(128, "target tokens kept (Table 8: 128)", ge=4)
    max_eval_samples: int = setting(500, "validation examples for the final CE / KL", ge=1)
    precision: str = setting("fp32", "autocast dtype of the forward passes (weights stay fp32)",
                             choices=PRECISIONS)
    seed: int = setting(42, "seed of gates, data order and dropout")
    decoder_gates: bool = setting(
        False, "also put hard-concrete gates on the kept decoder blocks' self- and "
               "cross-attention heads and FFN units (released L0Module; they only add noise: "
               "nothing of the decoder is removed), and fold their final soft values into "
               "the decoder's weights")
    checkpoint_selection: str = setting(
        "last", "which student is pruned and saved: last = after the last step; best = the "
                "one with the highest ROUGE-L of its pruned form on selection_samples "
                "validation examples (greedy), scored every eval_steps once selection started "
                "(released NashTrainer)", choices=CHECKPOINT_SELECTIONS)
    eval_steps: int = setting(500, "best: steps between validation scores", ge=1)
    selection_start_fraction: float = setting(
        0.3333, "best: selection starts at this share of the steps, or earlier at the first "
                "score where the gates' expected sparsity has reached the target (released "
                "run_NASH.sh, XSum/CNN-DM: start_saving_best_epochs 1 of 3)", ge=0, le=1)
    label_padding: str = setting(
        "ignore", "label padding: ignore (-100: padding is in no loss) or pad (the pad id: "
                  "padding counts in CE, KL and the decoder MSE, as the released code)",
        choices=LABEL_PADDINGS)



def nash_finetune_defaults() -> dict[str, Any]:
    """What NASH's final fine-tune takes from the pruning stage instead of from ``finetune``.

    NASH Table 8 (XSum, CNN/DM) gives one set of hyperparameters (3 epochs, AdamW 3e-5,
    4 examples per update, 512 / 128 tokens) without saying whether it covers the final
    fine-tune; the paper protocol reads it so, and takes weight decay 0 and fp32 from the
    released code (Table 8 names neither). These are NashTrain's defaults, read from it so
    each value is written once; none of the optimisation settings come from Campos & Zhai's
    ``finetune`` (1e-4, batch 64, weight decay 0.01, bf16). The workflow layers them as
    ``finetune`` < these < ``nash.finetune``: the rest (seed, checkpoint interval, validation
    size) is ``finetune``'s, and ``nash.finetune`` overrides any of them.
    """
    base = NashTrain()
    return {name: getattr(base, name) for name in
            ("epochs", "learning_rate", "lr_scheduler", "weight_decay", "precision",
             "effective_batch_size", "per_device_batch_size", "max_source_length",
             "max_target_length")}


# NASH as the authors' code runs it (jongwooko/NASH-Pruning-Official, the XSUM/CNNDM branch
# of its scripts), for NASH variants whose id ends in -rel (``asymprune.variants``). The
# workflow layers nash.train < RELEASED_NASH_TRAIN < nash.released.train (and
# nash.finetune's chain < RELEASED_NASH_FINETUNE < nash.released.finetune): these pin the
# protocol, the config may rescale it (the demo does). tests/test_settings.py pins each value
# to its script.
RELEASED_NASH_TRAIN: dict[str, Any] = {
    # scripts/run_NASH.sh
    "epochs": 3.0,                     # epochs=3 (cnndm branch)
    "learning_rate": 3.0e-5,           # learning_rate=3e-5
    "reg_learning_rate": 0.01,         # reg_learning_rate=0.01
    "effective_batch_size": 16,        # batch_size=16, one GPU
    "per_device_batch_size": 16,
    "max_source_length": 128,          # max_seq_length=128 (shared with its GLUE runs)
    "seed": 57,                        # seed=57
    "kl_temperature": 2.0,             # distill_temp=2
    "lr_scheduler": "linear",          # scheduler_type=linear
    "freeze_embeddings": True,         # --freeze_embeddings
    "sparsity_warmup_fraction": 0.3333,   # lagrangian_warmup_epochs=1 of 3
    "selection_start_fraction": 0.3333,   # start_saving_best_epochs=1 of 3
    "eval_steps": 6000,                # eval_steps=6000
    # trainer/trainer.py: evaluate() keeps the best ROUGE-L of the pruned model
    "checkpoint_selection": "best",
    # trainer/trainer.py: training_step optimises the labels' CE (+ R); its KL and layer
    # losses are defined and never called
    "prediction_loss": "ce",
    "distill_enc": 0.0,
    "distill_dec": 0.0,
    # models/l0_module.py: gates on the decoder's self/cross heads and FFN units too
    "decoder_gates": True,
    # run_prune.py: targets tokenized with padding="max_length", labels = input_ids: padded
    # with the pad id (0), not -100; cnndm/xsum targets up to the model's summarization
    # max_length (task_specific_params, 200 for T5) or 200
    "label_padding": "pad",
    "max_target_length": 200,
    # no --weight_decay, no --fp16: TrainingArguments' defaults
    "weight_decay": 0.0,
    "precision": "fp32",
}
RELEASED_NASH_FINETUNE: dict[str, Any] = {
    # scripts/run_final_FT.sh
    "epochs": 3.0,                     # epochs=3 (cnndm branch)
    "learning_rate": 3.0e-4,           # learning_rate=3e-4
    "effective_batch_size": 8,         # batch_size=8, one GPU
    "per_device_batch_size": 8,
    "max_source_length": 512,          # max_seq_length=512
    "seed": 57,                        # seed=57
    "lr_scheduler": "linear",          # args.py: scheduler_type defaults to linear
    "warmup_steps": 0,                 # TrainingArguments' default
    "weight_decay": 0.0,               # no --weight_decay: TrainingArguments' 0
    "precision": "fp32",               # no --fp16
    "eval_steps": 3000,                # eval_steps=3000
    # trainer/trainer.py: with pruning_type None it keeps the best ROUGE-L from the start
    "checkpoint_selection": "best",
    "label_padding": "pad",            # run_prune.py: padding="max_length" labels
    "max_target_length": 200,          # run_prune.py: cnndm/xsum targets
    # ours, not the script's (save_steps=0 there): the Trainer reloads the best from a save
    "save_steps": 3000,
}


@dataclass(frozen=True, kw_only=True)
class Evaluate:
    """ROUGE and generation length of a final model."""

    split: str = setting("test", "split scored", choices=("validation", "test"), stage=False)
    max_samples: Optional[int] = setting(None, "first N examples (null = the whole split)", ge=1)
    batch_size: int = setting(32, "sources per generate call", ge=1)
    max_source_length: int = setting(1024, "source tokens kept (truncation)", ge=8)
    max_new_tokens: int = setting(256, "generation length limit", ge=1)
    num_beams: int = setting(1, "1 = greedy, as the latency benchmark", ge=1)
    dtype: str = setting("fp32", "inference dtype", choices=PRECISIONS)
    engine: str = setting("eager", "generation engine of the main evaluation: eager "
                                   "(transformers generate, dynamic cache), compiled (static "
                                   "cache + torch.compile; greedy only, token-identical) or "
                                   "ct2-<compute type> (CTranslate2)",
                          choices=ENGINES)
    engines: list[str] = setting([], "further engines scored on the same documents, each with "
                                     "ROUGE, generation length and the share of outputs equal "
                                     "to the main evaluation's (e.g. ct2-int8: the quality cost "
                                     "of int8)", choices=ENGINES, stage=False)

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.num_beams != 1:
            if self.engine == "compiled":
                out.append(("engine", "compiled supports greedy decoding only; set @num_beams "
                                      "to 1"))
            if "compiled" in self.engines:
                out.append(("engines", "compiled supports greedy decoding only; set "
                                       "@num_beams to 1"))
        return out


@dataclass(frozen=True, kw_only=True)
class Benchmark:
    """Generation latency (protocol: docs/benchmark.md)."""

    enabled: bool = setting(True, "benchmark every model", stage=False)
    device: str = setting("cuda", "where latency is measured; also names "
                                  "results/<preset>/bench/<device>/", choices=("cpu", "cuda"))
    dtype: str = setting("fp32", "inference dtype", choices=PRECISIONS)
    batch_sizes: list[int] = setting([1, 8, 16], "batch sizes timed", ge=1)
    source_tokens: int = setting(1024, "tokens of every source", ge=1)
    new_tokens: int = setting(256, "fixed-length mode: exactly this many new tokens", ge=1)
    max_new_tokens: int = setting(256, "natural-length mode: EOS allowed, up to this many",
                                  ge=1)
    warmup: int = setting(2, "untimed runs first", ge=0)
    runs: int = setting(7, "timed runs (a standard deviation needs 2)", ge=2)
    modes: list[str] = setting(["fixed", "natural"], "fixed and/or natural length",
                               choices=BENCH_MODES)
    engines: list[str] = setting(["eager", "compiled"], "generation engines timed, "
                                 "interleaved in every round (compiled: static KV cache + "
                                 "torch.compile, CUDA graphs on a GPU; ct2-<compute type>: "
                                 "CTranslate2, quantized when loaded)", choices=ENGINES)
    inputs: str = setting("real", "real: test documents truncated to source_tokens, padded to "
                                  "the longest in the batch (the paper's protocol); repeated: "
                                  "each document repeated to exactly source_tokens",
                          choices=BENCH_INPUTS)
    nash_protocol: bool = setting(True, "also time NASH's own setting (beam search 4, batch "
                                        "32, natural length), labelled 'nash'")
    arch_only: list[str] = setting(
        [], "FLAN-T5 architectures to benchmark with random weights (all 16 variants, no "
            "training)", choices=flan_t5.SIZES, stage=False)

    def problems(self) -> list[tuple[str, str]]:
        out = engine_problems(self.engines, self.device)
        if len(set(self.engines)) != len(self.engines):
            out.append(("engines", f"an engine is listed twice in {self.engines}"))
        return out


@dataclass(frozen=True, kw_only=True)
class Report:
    """Tables, figures and the recommended variant."""

    latency_budget_ms: Optional[float] = setting(
        None, "recommend the best-quality variant whose latency is within this budget "
              "(at batch_size, fixed mode, per engine)", gt=0)
    quality_floor: Optional[float] = setting(
        None, "recommend the fastest variant that keeps at least this R-2 retention (percent of "
              "the teacher's R-2)", gt=0)
    batch_size: int = setting(1, "batch size the recommendation and the Pareto front use",
                              ge=1)
    # the report judges the benchmark's raw runs (docs/benchmark.md): a threshold changed here
    # reruns the report only, never a timing job
    max_spread: float = setting(0.25, "a cell whose (max - min) / median of the timed runs "
                                      "exceeds this is flagged as disturbed", gt=0)
    max_foreign_load: float = setting(0.10, "a cell during whose timed runs other processes "
                                            "used more than this share of the machine's CPU "
                                            "time is flagged as disturbed", gt=0, le=1)

    def problems(self) -> list[tuple[str, str]]:
        return []


_SPLIT_COUNTS = {"type": "object", "additionalProperties": False,
                 "properties": {s: {"type": ["integer", "null"], "minimum": 1} for s in SPLITS}}
_SPLIT_FILES = {"type": "object", "additionalProperties": False,
                "properties": {s: {"type": "string", "minLength": 1} for s in SPLITS}}


@dataclass(frozen=True, kw_only=True)
class Data:
    """One data set (config ``datasets.<name>``) plus the shared ``data`` block."""

    kind: str = setting(help="hub (datasets.load_dataset), local files, or generated (demo)",
                        choices=DATA_KINDS)
    path: Optional[str] = setting(None, "hub id (hub) or folder of split files (local)")
    name: Optional[str] = setting(None, "hub configuration, e.g. 3.0.0")
    format: str = setting("jsonl", "local file format", choices=DATA_FORMATS)
    files: dict = setting({}, "per split: file name under path (local; default "
                              "<split>.<format>) or the hub's split name (hub; default the same)",
                          schema=_SPLIT_FILES)
    source_column: str = setting("source", "column of the text to summarize")
    target_column: str = setting("target", "column of the reference summary")
    id_column: Optional[str] = setting(None, "column of example ids (null: <split>-<row>)")
    num_samples: dict = setting({}, "examples per split (generated)", schema=_SPLIT_COUNTS)
    seed: int = setting(0, "generator seed (generated; splits use seed+0/1/2)")
    max_samples: dict = setting({}, "keep only the first N examples of a split",
                                schema=_SPLIT_COUNTS)
    source_prefix: str = setting("summarize: ", "prepended to every source (FLAN-T5's task "
                                                "prefix)")
    empty_policy: str = setting("error", "examples with an empty source/target: error or drop",
                                choices=("error", "drop"))

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.kind in ("hub", "local") and not self.path:
            out.append(("path", f"a {self.kind} data set needs a path"))
        if self.kind == "generated":
            missing = [s for s in SPLITS if not self.num_samples.get(s)]
            if missing:
                out.append(("num_samples", f"a generated data set needs a count for every "
                                           f"split; missing {missing}"))
        return out


# the keys of `data:` in the config; the other fields of Data are keys of `datasets.<name>`
DATA_SHARED = ("source_prefix", "empty_policy")
