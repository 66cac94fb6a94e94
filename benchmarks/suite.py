"""The benchmark suite, as ``flowcore bench`` runs it: ``python benchmarks/suite.py [flowcore bench options]``.

    python benchmarks/suite.py --quick                       # smoke test, < 60 s
    python benchmarks/suite.py --objective lsd esd fm --net small paper --batch 1024 4096 --device cpu --json out.json

The code lives in flowcore.bench (so that an installed flowcore has `flowcore bench`); see README.md.
"""
import sys

from flowcore.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
