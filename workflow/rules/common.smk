# Helpers, config validation and the list of final outputs. Included first by the Snakefile.
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from asymprune import flan_t5, settings, settings_io, variants, workflow_config
from asymprune.provenance import stage_code_hash

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")

# Schema (keys, types, bounds), every merged block a stage gets (refinetune over finetune, ...)
# and facts across blocks (NASH depth vs model depth, batch arithmetic), before any job.
try:
    CFG = workflow_config.load(config, SCHEMA)
except workflow_config.ConfigError as e:
    raise WorkflowError("invalid configuration:\n" + "\n".join(f"  {l}" for l in str(e).splitlines()))

RESULTS = f"{config['results_dir']}/{config['preset']}"
REPORTS = f"{config['reports_dir']}/{config['preset']}"
LOGS = f"{RESULTS}/logs"
# Snakemake `benchmark:` files, one tsv per job (wall s, max RSS, cpu_time): what
# `python -m asymprune.plan` checks its estimates against
BENCHMARKS = f"{RESULTS}/benchmarks"
SIZES = list(config["models"])
DATASETS = list(config["datasets"])
VARIANTS = CFG.variants
NASH_VARIANTS = CFG.nash_variants
BASELINE_VARIANTS = CFG.baseline_variants
BENCH = settings_io.as_dict(CFG.benchmark)
BENCH_DEVICE = BENCH["device"]
BENCH_CT2 = any(e.startswith("ct2-") for e in BENCH["engines"])
# engines the evaluation scores besides its main one (evaluate.engines)
EVAL_ENGINES = list(CFG.evaluate.engines)

wildcard_constraints:
    size="|".join(SIZES),
    dataset="|".join(DATASETS),
    variant=variants.ANY_BODY,
    pvariant=variants.PRUNED_DEPTH_BODY,
    nvariant=variants.NASH_STAGE_BODY,
    engine="|".join(settings.ENGINES),


envvars:
    "PATH",


# Rules call `python -m asymprune.<stage>`: the environment running Snakemake runs the stages
# too, whether or not it is activated (jobs inherit PATH, also on SLURM with --export=ALL).
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])


def settings_json(obj):
    """A stage's settings block as one JSON argument. Rules insert it with `{params.x:q}`
    (shell-quoted); as a param it also reruns the stage when a setting changes."""
    return settings_io.to_json(obj)


def configfile_args():
    """`--configfile X` for each config file of this run, X relative to the working directory
    when it lies under it: the report prints a rerun command to be run there, and a
    checkout-specific absolute path (/home/me/asymprune/configs/demo.yaml) would be wrong in
    the committed demo report and would rerun the report when the checkout moves."""
    cwd = Path.cwd().resolve()
    args = []
    for f in workflow.config_settings.configfiles:
        path = Path(f).resolve()
        args += ["--configfile", str(path.relative_to(cwd)) if path.is_relative_to(cwd)
                 else str(path)]
    return shlex.join(args)


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


def single_gpu_launcher(gpu):
    """Prefix of a one-process command (evaluate, benchmark): never torchrun; on a GPU (gpu 1)
    pinned to one free GPU when execution.pin_gpus asks."""
    if config["execution"]["pin_gpus"] and gpu > 0:
        return "python -m asymprune.gpu_slots --gpus-per-job 1 -- python -m"
    return "python -m"


def launcher(size):
    """Prefix of a training command (finetune, refinetune, NASH: the stages that run DDP):
    pins gpus_per_job free GPUs, and spans them with torchrun."""
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


def teacher_inputs(wc):
    inputs = {"train": data_file(wc.dataset, "train"),
              "validation": data_file(wc.dataset, "validation")}
    if from_scratch(wc.size):
        inputs["tokenizer"] = f"{RESULTS}/tokenizer/{wc.size}/{wc.dataset}/sidecar.json"
    return inputs


def teacher_model_flags(wc):
    """--model, or --init-config + --tokenizer; every value shell-quoted."""
    if from_scratch(wc.size):
        fields = json.dumps(model_spec(wc.size)["init_config"], sort_keys=True)
        return shlex.join(["--init-config", fields,
                           "--tokenizer", f"{RESULTS}/tokenizer/{wc.size}/{wc.dataset}"])
    return shlex.join(["--model", model_spec(wc.size)["name_or_path"]])


def local_data_problems():
    """Local data files that are missing, each with the config key to set."""
    problems = []
    for name, spec in CFG.datasets.items():
        if spec.kind != "local":
            continue
        for split in settings.SPLITS:
            path = Path(spec.path) / spec.files.get(split, f"{split}.{spec.format}")
            if not path.is_file():
                problems.append(f"  {path} (split {split}): set config key datasets.{name}.path "
                                f"(and datasets.{name}.files) or remove datasets.{name}")
    return problems


LOCAL_DATA_PROBLEMS = local_data_problems()
if LOCAL_DATA_PROBLEMS:
    # A dry run still shows the grid; a real run stops in onstart, before any job.
    print("WARNING: local data set files are missing; a real run will stop before any job:\n"
          + "\n".join(LOCAL_DATA_PROBLEMS), file=sys.stderr)


# Hub ids exist? One metadata call per id, in the process that plans the run (not in the
# jobs a cluster executor starts). An id the hub does not know stops every run, dry or real;
# one that could not be checked (no network, not in the local cache) only warns a dry run,
# and a real run stops in onstart, before any job.
HUB = (workflow_config.check_hub_models(config["models"]) if workflow.is_main_process
       else workflow_config.HubCheck())
if HUB.missing:
    raise WorkflowError("models not found on the hub:\n" + "\n".join(HUB.missing))
if HUB.unchecked:
    print("WARNING: could not check that these models are on the hub; a real run will stop "
          "before any job unless the hub answers or the local cache has them:\n"
          + "\n".join(HUB.unchecked), file=sys.stderr)


def eval_json(size, dataset, variant):
    return f"{RESULTS}/eval/{size}/{dataset}/{variant}.json"


def bench_json(size, dataset, variant):
    return f"{RESULTS}/bench/{BENCH_DEVICE}/{size}/{dataset}/{variant}.json"


def all_variants(size=None):
    """Every trained variant for ``size`` (None: for every size). A benchmark job's outputs are
    one list for all sizes, so a -rel variant limited to some sizes (nash.released.sizes) is
    evaluated there but not benchmarked: it has its paper twin's depth and encoder budget."""
    return CFG.trained_variants(size)


def ct2_dir(size, dataset, variant):
    return f"{RESULTS}/ct2/{size}/{dataset}/{variant}"


def bench_models(wc):
    """The benchmark job of a size/dataset times every variant's model, interleaved (and its
    CTranslate2 export when a ct2-* engine is timed)."""
    inputs = {v: f"{model_dir(wc.size, wc.dataset, v)}/sidecar.json" for v in all_variants()}
    if BENCH_CT2:
        inputs.update({f"ct2_{v}": f"{ct2_dir(wc.size, wc.dataset, v)}/sidecar.json"
                       for v in all_variants()})
    return inputs


def bench_model_flags(wc):
    flags = [f"--model={v}={model_dir(wc.size, wc.dataset, v)}" for v in all_variants()]
    if BENCH_CT2:
        flags += [f"--ct2-model={v}={ct2_dir(wc.size, wc.dataset, v)}" for v in all_variants()]
    return shlex.join(flags)


def eval_inputs(wc, engine):
    """An evaluation's model (and its CTranslate2 export for a ct2-* engine)."""
    inputs = {"model": f"{model_dir(wc.size, wc.dataset, wc.variant)}/sidecar.json",
              "data": data_file(wc.dataset, CFG.evaluate.split)}
    if engine.startswith("ct2-"):
        inputs["ct2"] = f"{ct2_dir(wc.size, wc.dataset, wc.variant)}/sidecar.json"
    return inputs


def ct2_flag(wc, engine):
    if not engine.startswith("ct2-"):
        return ""
    return shlex.join(["--ct2-model", ct2_dir(wc.size, wc.dataset, wc.variant)])


def eval_engine_json(size, dataset, variant, engine):
    return f"{RESULTS}/eval_engines/{size}/{dataset}/{variant}/{engine}.json"


def eval_outputs():
    return [eval_json(s, d, v) for s in SIZES for d in DATASETS for v in all_variants(s)]


def eval_engine_outputs():
    return [eval_engine_json(s, d, v, e) for s in SIZES for d in DATASETS
            for v in all_variants() for e in EVAL_ENGINES]


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
    if HUB.unchecked:
        raise WorkflowError("could not check that these models are on the hub; nothing was "
                            "run:\n" + "\n".join(HUB.unchecked) + "\nconnect to the hub, "
                            "or download them once (`hf download ID`) so that the local cache "
                            "has them")
