# asymprune: the paper grid (config.yaml) or a preset: snakemake --configfile configs/demo.yaml
from snakemake.utils import min_version

min_version("9.0")


# Snakemake deep-merges a --configfile over this one: `--configfile configs/demo.yaml` would
# otherwise add the paper's three FLAN-T5 sizes to the demo. A preset replaces config.yaml.
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/nash.smk"
include: "workflow/rules/ct2.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/benchmark.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        get_final_output(),
    default_target: True
    localrule: True
