"""NSGA-II through Optuna: the proposals of a Pareto search (score up, costs down).

The algorithm is Optuna's :class:`~optuna.samplers.NSGAIISampler` (non-dominated sorting, crowding
distance, uniform crossover and mutation of the genes :mod:`diswot.search.pareto.encoding` maps each
space onto); this class only connects it to the search's propose/tell loop. Each proposal is an
``ask``: its genes are decoded into an architecture and checked against the budget; one over budget
is told ``FAIL`` at once (tagged ``rejected``) and never scored, so it never joins a population. A
scored one is told its score and costs, and carries its record in the trial's user attributes, so
optuna-dashboard shows what each trial was.

With Optuna's in-memory storage the run is a deterministic function of ``(seed, scores, costs)``,
like every other search: a resumed run replays the proposals and answers them from
``candidates.jsonl``. With an RDB storage (``--storage``) the study lives in the database and several
machines may add to it: a resumed run then re-proposes its own recorded candidates first (telling
the study any it missed when the process died) and continues from the stored population.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from diswot.search.ledger import Admission
from diswot.search.pareto.encoding import Genome
from diswot.search.pareto.front import COSTS
from diswot.search.searchers.base import Searcher

if TYPE_CHECKING:
    from diswot.search.config import SearchConfig

#: The record fields copied into each trial's user attributes (what the dashboard shows).
TRIAL_FIELDS = ("step", "arch", "score", "value", "params", "flops", "latency_ms")


class NSGA2(Searcher):
    """Optuna's NSGA-II as a searcher.

    Args:
        study: the Optuna study (directions: maximise the score, then minimise each cost).
        genome: the space's encoding.
        costs: the ``--pareto`` costs, in the study's order.
        run: this run's id in the trials' user attributes (a shared study holds several runs).
        replay: records to re-propose before asking anew (a resumed run on an RDB storage).
    """

    def __init__(
        self,
        admission: Admission,
        study: Any,
        genome: Genome,
        costs: Sequence[str],
        run: str,
        replay: Sequence[dict] = (),
    ) -> None:
        self.admission = admission
        self.study = study
        self.genome = genome
        self.keys = [COSTS[c].key for c in costs]
        self.run = run
        self.distributions = genome.distributions()
        self.replay = deque(replay)
        # Proposals waiting for their record, oldest first: a trial, or a replayed step number.
        self.open: deque[Any] = deque()
        # A stored study may hold this run's trials from a process that died (an in-memory one
        # is new, and its run id "memory" is never looked up).
        self.told = self._steps_in_study() if run != "memory" else set()

    @classmethod
    def from_config(cls, admission: Admission, rng: random.Random, cfg: SearchConfig) -> NSGA2:
        raise TypeError("NSGA2 is built by diswot.search.pareto.plan.ParetoPlan (it needs a study)")

    def _steps_in_study(self) -> set[int]:
        """Steps of this run the study holds as finished; running ones (the process that asked
        them died) are failed, so NSGA-II does not wait for them."""
        from optuna.trial import TrialState

        done = set()
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get("run") != self.run:
                continue
            if t.state == TrialState.RUNNING:
                self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            elif t.state == TrialState.COMPLETE and "step" in t.user_attrs:
                done.add(int(t.user_attrs["step"]))
        return done

    def propose(self, in_flight: int) -> str | None:
        if self.replay:
            rec = self.replay.popleft()
            self.open.append(int(rec["step"]))
            return str(rec["arch"])
        from optuna.trial import TrialState

        trial = self.study.ask(self.distributions)
        arch = self.admission.space.validate(self.genome.decode(trial.params))
        trial.set_user_attr("run", self.run)
        trial.set_user_attr("arch", arch)
        if not self.admission.admits(arch):
            trial.set_user_attr("rejected", "over budget")
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        self.open.append(trial)
        return arch

    def _values(self, record: dict) -> list[float] | None:
        values = [record.get("score"), *(record.get(k) for k in self.keys)]
        if any(v is None or not math.isfinite(v) for v in values):
            return None  # Optuna refuses NaN objectives: such a trial is failed
        return [float(v) for v in values]  # type: ignore[arg-type]

    def tell(self, record: dict, new: bool) -> None:
        from optuna.trial import TrialState, create_trial

        item = self.open.popleft()
        values = self._values(record)
        attrs = {k: record[k] for k in TRIAL_FIELDS if record.get(k) is not None}
        if isinstance(item, int):  # replayed: tell the study only what it missed
            if item not in self.told and values is not None:
                self.study.add_trial(
                    create_trial(
                        values=values,
                        params=self.genome.encode(record["arch"]),
                        distributions=self.distributions,
                        user_attrs={**attrs, "run": self.run},
                    )
                )
            return
        if not new:  # the same architecture as an earlier step: its record, not a new step
            attrs["repeat_of_step"] = attrs.pop("step")
        for k, v in attrs.items():
            if k != "arch":  # set when it was asked
                item.set_user_attr(k, v)
        if values is None:
            self.study.tell(item, state=TrialState.FAIL)
        else:
            self.study.tell(item, values)


__all__ = ["NSGA2", "TRIAL_FIELDS"]
