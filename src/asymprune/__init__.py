"""asymprune: structured pruning of encoder-decoder (T5) models.

Stages are modules with a ``main(argv)`` entry point, run as ``python -m asymprune.<stage>``.
This package's top level imports nothing heavy: the Snakefile imports
``asymprune.provenance`` at parse time, and ``snakemake -n`` must stay fast.
"""

__version__ = "0.1.0"
