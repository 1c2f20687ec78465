"""The whole workflow config, checked before any job is planned (pure Python, no torch).

``common.smk`` calls :func:`load` while Snakemake parses the workflow, so a wrong value stops
``snakemake -n`` with a message naming its config key, instead of failing hours later:

1. the JSON schema (``workflow/schemas/config.schema.yaml``: committed, complete, generated
   by :func:`schema_text` from ``config.schema.in.yaml``, its stage blocks from
   ``asymprune.settings`` and its variant patterns from ``asymprune.variants``);
2. every merged block a stage will get (``refinetune`` over ``finetune``, ``nash.finetune`` over
   ``finetune``, ``nash.train``, ``evaluate``, ``benchmark``, each data set over ``data``),
   with the cross-field checks of its dataclass;
3. facts across blocks: a NASH decoder depth against each model's depth (FLAN-T5 depths are
   known, ``init_config`` and local folders give the rest), the published layer tables against
   the depth, OOM retries that halve the per-device batch, GPUs per job against the batch;
4. each ``models.<size>.name_or_path`` is an existing local folder or a hub id that
   huggingface_hub's own validator accepts.

Whether each hub id exists is a network question, asked apart
(``asymprune.hub_check.check_hub_models``): ``common.smk`` asks it once per run, and a real run
stops before any job when an id is not on the hub or could not be checked.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

from asymprune import settings as S
from asymprune import settings_io as IO
from asymprune import variants as V
from asymprune.flan_t5 import FLAN_T5, HUB_IDS
from asymprune.hub_check import hub_id_problem
from asymprune.layers import SIXTHS_STRATEGIES

SCHEMAS = Path(__file__).resolve().parents[2] / "workflow/schemas"
# the hand-written part of the schema, with `$ref: "#/definitions/<name>"` where a generated
# definition goes; and the complete schema made from it (`make schema`), which is committed,
# read by the workflow, and kept current by tests/test_settings.py
SCHEMA_TEMPLATE = SCHEMAS / "config.schema.in.yaml"
SCHEMA = SCHEMAS / "config.schema.yaml"

# generated parts of the schema: `$ref: "#/definitions/<name>"` in the template points here
DEFINITIONS = {
    "training": lambda: IO.block_schema(S.Training),
    "training_overrides": lambda: IO.block_schema(S.Training, defaults=False),
    "nash_train": lambda: IO.block_schema(S.NashTrain),
    "nash_train_overrides": lambda: IO.block_schema(S.NashTrain, defaults=False),
    "evaluate": lambda: IO.block_schema(S.Evaluate),
    "benchmark": lambda: IO.block_schema(S.Benchmark),
    "report": lambda: IO.block_schema(S.Report),
    "data": lambda: IO.block_schema(S.Data, S.DATA_SHARED),
    "dataset": lambda: IO.block_schema(
        S.Data, tuple(f for f in S.Data.__dataclass_fields__ if f not in S.DATA_SHARED)),
    "depth_variant": lambda: {"type": "string", "pattern": V.DEPTH_PATTERN,
                              "description": V.DEPTH_GRAMMAR},
    "nash_variant": lambda: {"type": "string", "pattern": V.NASH_PATTERN,
                             "description": V.NASH_GRAMMAR},
    "layer_selection": lambda: {
        "type": "string", "enum": list(SIXTHS_STRATEGIES),
        "description": "how sixths become blocks: auto = the authors' tables for 8/12/24-layer "
                       "stacks, evenly spaced otherwise; published = the tables only; spaced = "
                       "evenly spaced"},
    "baseline_objective": lambda: {"enum": list(V.BASELINE_OBJECTIVES)},
    "teacher": lambda: {"const": V.TEACHER, "description": "the unpruned teacher's variant id"},
}

# T5Config's own default depth, for an init_config that does not say
T5_DEFAULT_LAYERS = 6


class ConfigError(ValueError):
    """The config is wrong; one line per problem, each naming its config key."""


def generate_schema(template: str | Path = SCHEMA_TEMPLATE) -> dict:
    """The complete schema: the template with its generated definitions filled in."""
    schema = yaml.safe_load(Path(template).read_text())
    defs = schema.setdefault("definitions", {})
    for name, make in DEFINITIONS.items():
        if name in defs:
            raise ValueError(f"{template}: definitions.{name} is generated from "
                             f"asymprune.settings / asymprune.variants; remove it from the file")
        defs[name] = make()
    return schema


def schema_text(template: str | Path = SCHEMA_TEMPLATE) -> str:
    """The committed schema file's text, as :func:`generate_schema` makes it now."""
    return (f"# GENERATED from {Path(template).name} and asymprune.settings / asymprune.variants "
            f"/ asymprune.layers\n# by `make schema` (python -m asymprune.workflow_config "
            f"--write-schema): edit those, not this file.\n"
            + yaml.safe_dump(generate_schema(template), sort_keys=False, width=100,
                             allow_unicode=True))


def config_schema(path: str | Path = SCHEMA) -> dict:
    """The complete schema (the committed file)."""
    return yaml.safe_load(Path(path).read_text())


def _message(e: jsonschema.ValidationError) -> str:
    path = list(e.absolute_path)
    if e.validator == "pattern" and e.schema.get("pattern") in (V.DEPTH_PATTERN, V.NASH_PATTERN):
        try:
            V.parse(e.instance)
        except ValueError as err:
            return str(err)
    if e.validator == "oneOf" and path[:1] == ["models"]:
        return "give exactly one of name_or_path (pretrained) or init_config (from scratch)"
    if e.validator == "not" and path[:2] == ["baselines", "variants"]:
        return f"{e.instance!r} is the teacher itself: it has no equal-budget twin"
    if e.validator == "oneOf" and path[:1] == ["variants"]:
        return f"{e.instance!r} is neither 'all' nor a list of {V.DEPTH_GRAMMAR}"
    return IO.schema_message(e)


def _fill_defaults(schema: dict, instance: dict) -> None:
    """Set each missing key that has a schema default, following $refs (jsonschema's recipe)."""
    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def properties(validator, props, inst, sch):
        if isinstance(inst, dict):
            for name, sub in props.items():
                if "default" in sub and name not in inst:
                    inst[name] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, inst, sch)

    filler = jsonschema.validators.extend(base, {"properties": properties})
    for _ in filler(schema).iter_errors(instance):
        pass  # the config was validated before; this pass only fills


def model_depths(spec: dict) -> tuple[int, int] | None:
    """(encoder, decoder) blocks of a model entry, or None when unknown before download."""
    if "init_config" in spec:
        c = spec["init_config"]
        n = c.get("num_layers", T5_DEFAULT_LAYERS)
        return n, c.get("num_decoder_layers") or n
    name = spec["name_or_path"]
    local = Path(name) / "config.json"
    if local.is_file():
        c = json.loads(local.read_text())
        return c["num_layers"], c.get("num_decoder_layers") or c["num_layers"]
    for size, hub_id in HUB_IDS.items():
        if name == hub_id:
            return FLAN_T5[size]["num_layers"], FLAN_T5[size]["num_decoder_layers"]
    return None


@dataclass(frozen=True)
class Resolved:
    """The validated config as the workflow, the planner and the stages' rules read it: every
    stage's settings, the variants, and the workflow's own keys (each config value one
    attribute; ``common.smk`` reads nothing else)."""

    preset: str
    results_dir: str
    reports_dir: str
    # models.<size>: name_or_path or init_config, tokenizer_vocab_size, resources (defaults in)
    models: dict[str, dict]
    layer_selection: str
    retries: int            # execution.retries
    pin_gpus: bool          # execution.pin_gpus
    released_sizes: list[str] | None   # nash.released.sizes
    finetune: S.Training
    refinetune: S.Training
    nash_finetune: S.Training
    nash_train: S.NashTrain
    # the -rel variants' (NASH's released protocol, asymprune.settings.RELEASED_NASH_*)
    nash_finetune_released: S.Training
    nash_train_released: S.NashTrain
    evaluate: S.Evaluate
    benchmark: S.Benchmark
    report: S.Report
    datasets: dict[str, S.Data]
    variants: list[str]
    nash_variants: list[str]
    baseline_variants: list[str]

    @property
    def results(self) -> str:
        """``results/<preset>``: every artifact of the run."""
        return f"{self.results_dir}/{self.preset}"

    @property
    def reports(self) -> str:
        return f"{self.reports_dir}/{self.preset}"

    def nash_stage_settings(self, variant: str) -> tuple[str, S.NashTrain]:
        """(config key, settings) of the NASH stage of ``variant``: a -rel variant trains with
        the released code's protocol."""
        if V.protocol(variant) == "released":
            return "nash.released.train", self.nash_train_released
        return "nash.train", self.nash_train

    def nash_finetune_settings(self, variant: str) -> tuple[str, S.Training]:
        """(config key, settings) of the final fine-tune of a NASH variant or baseline."""
        if V.protocol(variant) == "released":
            return "nash.released.finetune", self.nash_finetune_released
        return "nash.finetune", self.nash_finetune

    def trained_variants(self, size: str | None = None) -> list[str]:
        """Depth variants, NASH variants and equal-budget baselines: those trained for ``size``,
        or (None) those trained for every size. The workflow's rules and the planner both ask
        here, so the jobs billed are the jobs run."""
        return self.variants + self.nash_stage_variants(size)

    def nash_stage_variants(self, size: str | None = None) -> list[str]:
        """The variants that go through the NASH stage (NASH variants, equal-budget baselines)
        for ``size``, as :meth:`trained_variants`. A -rel variant (NASH's released protocol)
        runs only on ``nash.released.sizes`` when that is set."""
        sizes = self.released_sizes
        nash = [v for v in self.nash_variants
                if V.protocol(v) == "paper" or sizes is None or (size is not None and size in sizes)]
        return nash + self.baseline_variants


def load(cfg: dict, schema_path: str | Path) -> Resolved:
    """Validate ``cfg`` (filled with defaults in place) and build every stage's settings."""
    schema = config_schema(schema_path)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(cfg),
                    key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("\n".join(
            f"config key {'.'.join(map(str, e.absolute_path)) or '<top level>'}: {_message(e)}"
            for e in errors))
    _fill_defaults(schema, cfg)

    problems: list[str] = []

    def build(cls, layers):
        try:
            return cls.__name__, IO.build(cls, layers)
        except IO.SettingsError as e:
            problems.extend(str(e).splitlines())
            return cls.__name__, None

    built = {
        "finetune": build(S.Training, [("finetune", cfg["finetune"])])[1],
        "refinetune": build(S.Training, [("finetune", cfg["finetune"]),
                                         ("refinetune", cfg["refinetune"])])[1],
        # NASH's own fine-tune settings sit between the two (asymprune.settings
        # .nash_finetune_defaults); a problem with one of them is fixed under nash.finetune
        "nash_finetune": build(S.Training, [("finetune", cfg["finetune"]),
                                            ("nash.finetune", S.nash_finetune_defaults()),
                                            ("nash.finetune", cfg["nash"]["finetune"])])[1],
        "nash_train": build(S.NashTrain, [("nash.train", cfg["nash"]["train"])])[1],
        # the released protocol pins its settings over the paper's; nash.released rescales
        "nash_finetune_released": build(S.Training, [
            ("finetune", cfg["finetune"]), ("nash.finetune", S.nash_finetune_defaults()),
            ("nash.finetune", cfg["nash"]["finetune"]),
            ("nash.released.finetune", S.RELEASED_NASH_FINETUNE),
            ("nash.released.finetune", cfg["nash"]["released"]["finetune"])])[1],
        "nash_train_released": build(S.NashTrain, [
            ("nash.train", cfg["nash"]["train"]),
            ("nash.released.train", S.RELEASED_NASH_TRAIN),
            ("nash.released.train", cfg["nash"]["released"]["train"])])[1],
        "evaluate": build(S.Evaluate, [("evaluate", cfg["evaluate"])])[1],
        "benchmark": build(S.Benchmark, [("benchmark", cfg["benchmark"])])[1],
        "report": build(S.Report, [("report", cfg["report"])])[1],
    }
    datasets = {}
    for name, spec in cfg["datasets"].items():
        datasets[name] = build(S.Data, [(f"datasets.{name}", spec), ("data", cfg["data"])])[1]

    depth_variants = list(V.PAPER) if cfg["variants"] == "all" else list(cfg["variants"])
    if V.TEACHER not in depth_variants:
        problems.append(f"config key variants: must include {V.TEACHER} (the baseline every "
                        f"table compares to)")
    nash_variants: list[str] = []
    if cfg["nash"]["enabled"]:
        nash_variants = list(cfg["nash"]["variants"])
        if cfg["nash"]["ablations"]:
            nash_variants += [v for v in cfg["nash"]["ablation_variants"]
                              if v not in nash_variants]

    # e{E}d{D}-{kd|ce}: trained by the NASH stage, so they need NASH switched on
    baseline_variants = [f"{v}-{o}" for v in cfg["baselines"]["variants"]
                         for o in cfg["baselines"]["objectives"]]
    if baseline_variants and not cfg["nash"]["enabled"]:
        problems.append("config key baselines.variants: equal-budget baselines take NASH's "
                        "budget, but nash.enabled is false; set baselines.variants to [] or "
                        "enable nash")

    for size, spec in cfg["models"].items():
        if "name_or_path" in spec and (p := hub_id_problem(spec["name_or_path"])):
            problems.append(f"config key models.{size}.name_or_path: {p}")
    depths = {size: model_depths(spec) for size, spec in cfg["models"].items()}
    for size, depth in depths.items():
        if depth is None:
            continue  # a hub id we do not know: the stage checks once it has the config
        n_enc, n_dec = depth
        for key, listed in (("variants", depth_variants),
                            ("baselines.variants", cfg["baselines"]["variants"])):
            for v in listed:
                try:
                    V.parse_depth(v).blocks(n_enc, n_dec, cfg["layer_selection"])
                except ValueError as e:
                    listed_in = "" if key == "variants" else f" ({key})"
                    problems.append(f"config key layer_selection: {v}{listed_in} of "
                                    f"models.{size} ({n_enc}+{n_dec} blocks): {e}")
        for key in ("variants", "ablation_variants"):
            if key == "ablation_variants" and not cfg["nash"]["ablations"]:
                continue
            for v in cfg["nash"][key] if cfg["nash"]["enabled"] else []:
                try:
                    V.check_depth(v, n_enc, n_dec)
                except ValueError as e:
                    problems.append(f"config key nash.{key}: {e} (models.{size} has "
                                    f"{n_enc} encoder + {n_dec} decoder blocks)")

    ev = built["evaluate"]
    if ev is not None:
        # an evaluation runs where its model trains: on a GPU when the size has one
        for size, spec in cfg["models"].items():
            device = "cuda" if spec["resources"]["gpu"] > 0 else "cpu"
            for key, engines in (("evaluate.engine", [ev.engine]),
                                 ("evaluate.engines", list(ev.engines))):
                problems += [f"config key {key}: {msg} (models.{size} evaluates on {device})"
                             for _, msg in S.engine_problems(engines, device)]

    retries = cfg["execution"]["retries"]
    released = any(V.protocol(v) == "released" for v in nash_variants)
    for size in cfg["nash"]["released"]["sizes"] or []:
        if size not in cfg["models"]:
            problems.append(f"config key nash.released.sizes: {size!r} is not a size of models "
                            f"({', '.join(cfg['models'])})")
    for key in ("finetune", "refinetune", "nash_finetune", "nash_train",
                "nash_finetune_released", "nash_train_released"):
        t = built[key]
        if t is None or (key.endswith("_released") and not released):
            continue
        cfg_key = {"nash_finetune_released": "nash.released.finetune",
                   "nash_train_released": "nash.released.train"}.get(
                       key, key.replace("nash_", "nash."))
        # each retry halves the per-device batch: 2 ** retries must divide it
        if t.per_device_batch_size % 2 ** retries:
            problems.append(
                f"config key execution.retries: {retries} retr{'y' if retries == 1 else 'ies'} "
                f"halve {cfg_key}.per_device_batch_size {t.per_device_batch_size} "
                f"{retries} time(s), which leaves no whole batch; use a per-device batch "
                f"divisible by {2 ** retries} or fewer retries")
        for size, spec in cfg["models"].items():
            gpus = spec["resources"]["gpus_per_job"]
            if gpus > 1 and t.effective_batch_size % (t.per_device_batch_size * gpus):
                problems.append(
                    f"config key models.{size}.resources.gpus_per_job: {gpus} GPUs x "
                    f"{cfg_key}.per_device_batch_size {t.per_device_batch_size} does not "
                    f"divide {cfg_key}.effective_batch_size {t.effective_batch_size}")
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))
    return Resolved(preset=cfg["preset"], results_dir=cfg["results_dir"],
                    reports_dir=cfg["reports_dir"], models=cfg["models"],
                    layer_selection=cfg["layer_selection"],
                    retries=cfg["execution"]["retries"], pin_gpus=cfg["execution"]["pin_gpus"],
                    released_sizes=cfg["nash"]["released"]["sizes"], datasets=datasets,
                    variants=depth_variants, nash_variants=nash_variants,
                    baseline_variants=baseline_variants, **built)


def main(argv: list[str] | None = None) -> int:
    """``python -m asymprune.workflow_config [--schema FILE] [CONFIG]``: check a config without
    Snakemake, or print / write the complete schema."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m asymprune.workflow_config", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", type=Path, help="config YAML to check")
    p.add_argument("--schema", type=Path, default=SCHEMA,
                   help="the complete schema (default: the committed %(default)s)")
    p.add_argument("--print-schema", action="store_true",
                   help="print the complete schema as the code generates it now")
    p.add_argument("--write-schema", action="store_true",
                   help=f"write the complete schema to --schema, generated from "
                        f"{SCHEMA_TEMPLATE.name} and the settings dataclasses (make schema)")
    args = p.parse_args(argv)
    if args.print_schema:
        print(schema_text(), end="")
        return 0
    if args.write_schema:
        args.schema.write_text(schema_text())
        print(f"wrote {args.schema}")
        return 0
    if args.config is None:
        p.error("give a config file, --print-schema or --write-schema")
    try:
        load(yaml.safe_load(args.config.read_text()), args.schema)
    except ConfigError as e:
        print(f"invalid configuration {args.config}:\n{e}", file=sys.stderr)
        return 1
    print(f"{args.config}: valid")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
