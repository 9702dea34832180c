"""Start-up cost of NB201's FLOP terms: leaf-module hooks against the dispatch-mode counter.

Every NB201 ``search`` and ``rank`` first profiles six small networks to get the closed-form
params/FLOPs terms (``NB201Space._cost_terms``). diswot's own networks are counted from forward
hooks; the general counter is a ``TorchDispatchMode``, whose first use imports ``torch._dynamo``.
Each measurement runs in a fresh process (the import is paid once per process), the two ways
taking turns; both must give the same terms.

    python benchmarks/cost_terms.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = """
import json, sys, time
import diswot.models.cost as cost
if sys.argv[1] == "dispatch":
    cost._macs_in_leaves = lambda model: False
from diswot.spaces import get_space
space = get_space("nb201")
t0 = time.perf_counter()
base, delta = space._cost_terms(100, 32)
seconds = time.perf_counter() - t0
terms = [base.params, base.flops] + [v for c in delta.values() for v in (c.params, c.flops)]
print(json.dumps({"seconds": seconds, "dynamo": "torch._dynamo" in sys.modules, "terms": terms}))
"""


def run(way: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, way], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    seconds: dict[str, list[float]] = {"hooks": [], "dispatch": []}
    terms = {}
    for _ in range(args.repeats):
        for way in seconds:
            r = run(way)
            seconds[way].append(round(r["seconds"], 3))
            terms[way] = r["terms"]
            print(f"{way}: {r['seconds']:.3f} s, torch._dynamo imported: {r['dynamo']}", flush=True)
    if terms["hooks"] != terms["dispatch"]:
        raise SystemExit(f"the two counters disagree: {terms}")
    print(json.dumps({"seconds": seconds, "same_terms": True}))


if __name__ == "__main__":
    main()
