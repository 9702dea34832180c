"""How often a serial NB201 search guesses its next candidate right (its weights drawn ahead).

While a candidate is scored, a serial ``search`` on the supernet's draw-ahead path works out its
likely next proposal and the supernet draws that candidate's weights on a thread
(``docs/scale.md``, the overlap paragraph). This counts, per scored candidate, whether its weights
were already being drawn. The draw thread is off by default everywhere (on CUDA the supernet
slices weights out of per-seed streams instead, nothing to draw), so ``--force`` turns it on, as
the tests do.

    python benchmarks/search_guesses.py --cycles 300 --force --threads 1
    PYTHONPATH=src python3 benchmarks/search_guesses.py --device cuda --cycles 1000 --force
"""

from __future__ import annotations

import argparse
import json

import torch

from diswot.models.nb201_supernet import NB201Supernet
from diswot.search import run_search
from diswot.spaces import get_space


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=300)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=4, help="small: only the guesses matter")
    p.add_argument("--force", action="store_true", help="turn the draw thread on")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    space = get_space("nb201")
    make = type(space).supernet
    if args.force:

        def overlapping(self, num_classes, device, channels_last):  # noqa: ANN001, ANN202
            sn = make(self, num_classes, device, channels_last)
            sn.overlap = True
            return sn

        type(space).supernet = overlapping  # type: ignore[method-assign]
    drawn_ahead: list[bool] = []
    load = NB201Supernet.load

    def counting_load(self: NB201Supernet, arch: str, seed: int) -> None:
        drawn_ahead.append(self._pending is not None and self._pending[0] == arch)
        load(self, arch, seed)

    NB201Supernet.load = counting_load  # type: ignore[method-assign]
    res = run_search(
        "nb201",
        teacher="resnet20",
        cycles=args.cycles,
        batch_size=args.batch_size,
        device=args.device,
        seed=0,
        progress=False,
    )
    print(
        json.dumps(
            {
                "scored": res.n_scored,
                "loads": len(drawn_ahead),
                "drawn_ahead": sum(drawn_ahead),
                "population": res.settings.get("population"),
                "sample_size": res.settings.get("sample_size"),
            }
        )
    )


if __name__ == "__main__":
    main()
