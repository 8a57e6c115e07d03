import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def mcr_cli(*args):
    """`python -m bench.mcr ARGS` from the repository root, its output captured."""
    return subprocess.run([sys.executable, "-m", "bench.mcr", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
