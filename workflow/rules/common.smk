# Helpers, config validation and the list of final outputs. Included first by the Snakefile.
import json
import os
import shlex
import sys
from pathlib import Path

import jsonschema
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from asymprune import layers
from asymprune.nash.variants import parse_variant_id
from asymprune.provenance import stage_code_hash

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")


def _check_config(cfg):
    """Validate against the JSON schema; every error names its config key."""
    with open(SCHEMA) as f:
        schema = yaml.safe_load(f)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors:
            key = ".".join(str(p) for p in e.absolute_path) or "<top level>"
            if e.validator == "additionalProperties":
                msg = e.message.replace("Additional properties are not allowed", "unknown key(s)")
            elif e.validator == "oneOf" and e.absolute_path and e.absolute_path[0] == "models":
                msg = "give exactly one of name_or_path (pretrained) or init_config (from scratch)"
            elif e.validator == "oneOf" and list(e.absolute_path)[:1] == ["variants"]:
                msg = f"{e.instance!r} is neither 'all' nor a list of e{{E}}d{{D}} with E, D in 1..6"
            else:
                msg = e.message
            lines.append(f"  config key {key}: {msg}")
        raise WorkflowError("invalid configuration:\n" + "\n".join(lines))
    # fills in the schema's defaults (the papers' settings)
    validate(cfg, schema=SCHEMA, set_default=True)


_check_config(config)

RESULTS = f"{config['results_dir']}/{config['preset']}"
REPORTS = f"{config['reports_dir']}/{config['preset']}"
LOGS = f"{RESULTS}/logs"
SIZES = list(config["models"])
DATASETS = list(config["datasets"])
VARIANTS = list(layers.VARIANTS) if config["variants"] == "all" else list(config["variants"])
PRUNED_VARIANTS = [v for v in VARIANTS if v != "e6d6"]
if "e6d6" not in VARIANTS:
    # every table is relative to the unpruned teacher
    raise WorkflowError("config key variants: must include e6d6 (the baseline every table compares to)")
NASH_VARIANTS = []
if config["nash"]["enabled"]:
    NASH_VARIANTS = list(config["nash"]["variants"])
    if config["nash"]["ablations"]:
        NASH_VARIANTS += [v for v in config["nash"]["ablation_variants"] if v not in NASH_VARIANTS]
SPLITS = ("train", "validation", "test")
BENCH = config["benchmark"]
BENCH_DEVICE = BENCH["device"]
REFINETUNE = {**config["finetune"], **config["refinetune"]}

wildcard_constraints:
    size="|".join(SIZES),
    dataset="|".join(DATASETS),
    variant=r"e[1-6]d[1-6]|nash-[a-z0-9-]+",
    # the 15 pruned depth variants: e6d6 is the teacher itself, made by rule finetune
    pvariant=r"e[1-5]d[1-6]|e6d[1-5]",
    nvariant=r"nash-[a-z0-9-]+",


envvars:
    "PATH",


# Rules call `python -m asymprune.<stage>`: the environment running Snakemake runs the stages
# too, whether or not it is activated (jobs inherit PATH, also on SLURM with --export=ALL).
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])


def code(stage):
    """Content hash of the code a stage runs: a params entry, so editing a stage reruns it."""
    return stage_code_hash(stage)


def model_dir(size, dataset, variant):
    return f"{RESULTS}/models/{size}/{dataset}/{variant}/model"


def checkpoint_dir(size, dataset, variant, stage):
    # not an output of any rule: Snakemake never deletes it, so reruns resume from it
    return f"{RESULTS}/checkpoints/{size}/{dataset}/{variant}/{stage}"


def data_file(dataset, split):
    return f"{RESULTS}/data/{dataset}/{split}.jsonl"


def model_spec(size):
    return config["models"][size]


def from_scratch(size):
    return "init_config" in model_spec(size)


def res(size, key):
    return model_spec(size)["resources"][key]


def training_flags(t):
    """CLI flags of asymprune.finetune for a training config block."""
    flags = [
        f"--epochs {t['epochs']}", f"--max-steps {t['max_steps']}",
        f"--learning-rate {t['learning_rate']}", f"--lr-scheduler {t['lr_scheduler']}",
        f"--warmup-steps {t['warmup_steps']}", f"--weight-decay {t['weight_decay']}",
        f"--effective-batch-size {t['effective_batch_size']}",
        f"--per-device-batch-size {t['per_device_batch_size']}",
        f"--precision {t['precision']}", f"--seed {t['seed']}",
        f"--max-source-length {t['max_source_length']}",
        f"--max-target-length {t['max_target_length']}",
        f"--max-eval-samples {t['max_eval_samples']}",
        f"--save-steps {t['save_steps']}", f"--logging-steps {t['logging_steps']}",
    ]
    if t["max_train_samples"]:
        flags.append(f"--max-train-samples {t['max_train_samples']}")
    return " ".join(flags)


def launcher(size):
    """Prefix of a training/benchmark command: pins a free GPU, and spans several with torchrun."""
    parts = []
    if config["execution"]["pin_gpus"] and res(size, "gpu") > 0:
        parts.append(f"python -m asymprune.gpu_slots --gpus-per-job {res(size, 'gpus_per_job')} --")
    if res(size, "gpus_per_job") > 1:
        parts.append(f"python -m torch.distributed.run --standalone "
                     f"--nproc_per_node {res(size, 'gpus_per_job')} -m")
    else:
        parts.append(f"python -m")
    return " ".join(parts)


def batch_divisor(wildcards, attempt):
    # an OOM retry halves the per-device batch and doubles accumulation (same effective batch)
    return 2 ** (attempt - 1)


def data_flags(dataset):
    spec = config["datasets"][dataset]
    flags = [f"--kind {spec['kind']}", f"--source-prefix {config['data']['source_prefix']!r}",
             f"--empty-policy {config['data']['empty_policy']}"]
    if spec["kind"] == "generated":
        # fixed split order: params must not change with the key order of a config file
        flags += [f"--num-samples {s}={spec['num_samples'][s]}" for s in SPLITS
                  if s in spec["num_samples"]]
        flags.append(f"--seed {spec['seed']}")
    else:
        flags += [f"--path {spec['path']!r}", f"--format {spec['format']}",
                  f"--source-column {spec['source_column']!r}",
                  f"--target-column {spec['target_column']!r}"]
        if spec.get("name"):
            flags.append(f"--name {spec['name']!r}")
        if spec["id_column"]:
            flags.append(f"--id-column {spec['id_column']!r}")
        flags += [f"--split {s}={spec['files'][s]!r}" for s in SPLITS if s in spec.get("files", {})]
    flags += [f"--max-samples {s}={spec['max_samples'][s]}" for s in SPLITS
              if spec["max_samples"].get(s)]
    return " ".join(flags)


def teacher_inputs(wc):
    inputs = {"train": data_file(wc.dataset, "train"),
              "validation": data_file(wc.dataset, "validation")}
    if from_scratch(wc.size):
        inputs["tokenizer"] = f"{RESULTS}/tokenizer/{wc.size}/{wc.dataset}/sidecar.json"
    return inputs


def teacher_model_flags(wc):
    if from_scratch(wc.size):
        fields = json.dumps(model_spec(wc.size)["init_config"], sort_keys=True)
        return (f"--init-config {shlex.quote(fields)}"
                f" --tokenizer {RESULTS}/tokenizer/{wc.size}/{wc.dataset}")
    return f"--model {model_spec(wc.size)['name_or_path']}"


def nash_variant_args(variant):
    """The `python -m asymprune.nash` flags a NASH variant id fixes (ids validated by the schema)."""
    return parse_variant_id(variant).cli_args()


def nash_train_flags(t):
    """CLI flags of asymprune.nash for the nash.train config block."""
    return (f"--epochs {t['epochs']} --max-steps {t['max_steps']} --batch-size {t['batch_size']}"
            f" --grad-accum {t['grad_accum']} --learning-rate {t['learning_rate']}"
            f" --reg-learning-rate {t['reg_learning_rate']}"
            f" --gate-init-droprate {t['gate_init_droprate']} --kl-direction {t['kl_direction']}"
            f" --sparsity-warmup-fraction {t['sparsity_warmup_fraction']}"
            f" --distill-enc {t['distill_enc']} --distill-dec {t['distill_dec']}"
            f" --max-source-length {t['max_source_length']}"
            f" --max-target-length {t['max_target_length']}"
            f" --max-eval-samples {t['max_eval_samples']} --precision {t['precision']}"
            f" --seed {t['seed']} --save-steps {t['save_steps']}"
            f" --logging-steps {t['logging_steps']}")


def local_data_problems():
    """Local data files that are missing, each with the config key to set."""
    problems = []
    for name, spec in config["datasets"].items():
        if spec["kind"] != "local":
            continue
        files = spec.get("files", {})
        for split in ("train", "validation", "test"):
            path = Path(spec["path"]) / files.get(split, f"{split}.{spec['format']}")
            if not path.is_file():
                problems.append(f"  {path} (split {split}): set config key datasets.{name}.path "
                                f"(and datasets.{name}.files) or remove datasets.{name}")
    return problems


LOCAL_DATA_PROBLEMS = local_data_problems()
if LOCAL_DATA_PROBLEMS:
    # A dry run still shows the grid; a real run stops in onstart, before any job.
    print("WARNING: local data set files are missing; a real run will stop before any job:\n"
          + "\n".join(LOCAL_DATA_PROBLEMS), file=sys.stderr)


def eval_json(size, dataset, variant):
    return f"{RESULTS}/eval/{size}/{dataset}/{variant}.json"


def bench_json(size, dataset, variant):
    return f"{RESULTS}/bench/{BENCH_DEVICE}/{size}/{dataset}/{variant}.json"


def all_variants():
    """Depth variants plus NASH variants (nash.smk defines NASH_VARIANTS)."""
    return VARIANTS + NASH_VARIANTS


def eval_outputs():
    return [eval_json(s, d, v) for s in SIZES for d in DATASETS for v in all_variants()]


def bench_outputs():
    if not BENCH["enabled"]:
        return []
    return [bench_json(s, d, v) for s in SIZES for d in DATASETS for v in all_variants()]


def bench_arch_outputs():
    if not BENCH["enabled"]:
        return []
    return [f"{RESULTS}/bench_arch/{BENCH_DEVICE}/{a}/{v}.json"
            for a in BENCH["arch_only"] for v in VARIANTS]


def report_outputs():
    return [f"{REPORTS}/DONE"]


def get_final_output():
    return report_outputs()


onstart:
    if LOCAL_DATA_PROBLEMS:
        raise WorkflowError("local data set files are missing; nothing was run:\n"
                            + "\n".join(LOCAL_DATA_PROBLEMS))
