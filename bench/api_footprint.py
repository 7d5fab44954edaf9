"""What one API worker costs before it serves a request: import time, resident memory, modules loaded.

    python bench/api_footprint.py [--repeats 5]

Each repeat imports `service.api.app` and builds the app in a fresh interpreter, then prints the
median import time, the resident memory after the import (VmRSS), the number of modules and the
heaviest top-level packages loaded, and whether any of JAX, gymnax, flax, openai or SciPy came in.
Goals (issue 23): no JAX, import <= 2 s, <= 150 MB resident.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys, time
started = time.perf_counter()
import service.api.app
app = service.api.app.create_app()
seconds = time.perf_counter() - started
rss_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
packages = {}
for name in sys.modules:
    top = name.split(".")[0]
    packages[top] = packages.get(top, 0) + 1
print(json.dumps({"seconds": seconds, "rss_mb": rss_kb / 1024, "modules": len(sys.modules), "packages": packages}))
"""

UNWANTED = ("jax", "jaxlib", "gymnax", "flax", "openai", "scipy")


def measure() -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    runs = [measure() for _ in range(args.repeats)]
    last = runs[-1]
    seconds = [r["seconds"] for r in runs]
    rss = [r["rss_mb"] for r in runs]
    print(f"import + create_app: median {statistics.median(seconds):.2f} s (min {min(seconds):.2f}, max "
          f"{max(seconds):.2f}) over {len(runs)} fresh interpreters")
    print(f"resident after import: median {statistics.median(rss):.0f} MB (min {min(rss):.0f}, max {max(rss):.0f})")
    print(f"modules loaded: {last['modules']}")
    heaviest = sorted(last["packages"].items(), key=lambda item: -item[1])[:12]
    print("heaviest packages (modules): " + ", ".join(f"{name} {count}" for name, count in heaviest))
    present = [name for name in UNWANTED if name in last["packages"]]
    print(f"JAX, gymnax, flax, openai, SciPy loaded: {', '.join(present) if present else 'none'}")


if __name__ == "__main__":
    main()
