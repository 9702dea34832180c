"""What a Pareto search adds to :func:`~diswot.search.api.run_search`, in one object.

``run_search`` asks a :class:`ParetoPlan` at each point where a Pareto search differs from the
others: the algorithm (Optuna's NSGA-II), the admission (a latency budget), the settings written
(a ``pareto`` object beside the usual ones), the searcher and its Optuna study, the ledger (each
record's latency) and the result (the front and its files). Everything else (budgets, dedup,
workers, ``candidates.jsonl``, resume by replay) is the search's own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from diswot.config import build, replace, to_settings
from diswot.errors import DiswotError
from diswot.runfolder import refuse_other_settings
from diswot.search.budget import Budget
from diswot.search.config import read_settings
from diswot.search.ledger import Admission, Ledger
from diswot.search.pareto.config import ALGORITHM, FIXED, KEY, ParetoConfig
from diswot.search.pareto.encoding import Genome, genome_for
from diswot.search.pareto.front import pareto_front, parse_costs
from diswot.search.pareto.measure import LATENCIES, LatencyAdmission, LatencyLedger, LatencyMeter
from diswot.search.pareto.plot import PARETO_PLOT, plot_front
from diswot.search.pareto.result import ParetoResult
from diswot.search.result import SearchResult
from diswot.spaces import SearchSpace

#: The one line a user without Optuna reads.
INSTALL = "--pareto needs Optuna: pip install 'diswot[pareto]' (or pip install 'optuna>=3.4')"


def require_optuna() -> Any:
    """The ``optuna`` module, or a one-line error saying how to install it."""
    try:
        import optuna
    except ImportError as exc:
        raise DiswotError(INSTALL) from exc
    return optuna


def hide_password(url: str) -> str:
    """``url`` as a run folder may store it: a database password is replaced by ``***``."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy reads: Optuna will say so when it opens it
        return url


def _config(pareto: ParetoConfig | str | Iterable[str]) -> ParetoConfig:
    cfg = pareto if isinstance(pareto, ParetoConfig) else build(ParetoConfig, costs=pareto)
    cfg = replace(cfg, costs=parse_costs(cfg.costs))
    for name in ("latency_batch", "latency_repeats", "latency_warmup"):
        v = getattr(cfg, name)
        least = 0 if name == "latency_warmup" else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < least:
            raise DiswotError(
                f"--{name.replace('_', '-')} must be an integer >= {least}; got {v!r}"
            )
    if cfg.max_latency_ms is not None:
        ms = cfg.max_latency_ms
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not ms > 0:
            raise DiswotError(f"--max-latency-ms must be a positive number; got {ms!r}")
        cfg = replace(cfg, max_latency_ms=float(ms))
    return cfg


class ParetoPlan:
    """The Pareto search's part of one run (see the module docstring)."""

    def __init__(self, space: SearchSpace, cfg: ParetoConfig, genome: Genome) -> None:
        self.space = space
        self.cfg = cfg
        self.genome = genome
        self.meter: LatencyMeter | None = None
        self.study: Any = None
        self.replay: list[dict] = []
        self.known: dict[str, dict] = {}
        self._verbosity: int | None = None

    @classmethod
    def create(
        cls,
        space: SearchSpace,
        pareto: ParetoConfig | str | Iterable[str] | None,
        algorithm: str | None,
    ) -> ParetoPlan:
        """Check the Pareto settings and that this space and this machine can run them."""
        if pareto is None:
            raise DiswotError(f"--algorithm {ALGORITHM} is the Pareto search; give --pareto COSTS")
        if algorithm is not None and algorithm.lower() != ALGORITHM:
            raise DiswotError(
                f"--pareto searches with NSGA-II (Optuna); drop --algorithm {algorithm}"
            )
        cfg = _config(pareto)
        require_optuna()
        return cls(space, cfg, genome_for(space))

    def check_run(self, *, device: str, workers: int, backend: str, population: int) -> None:
        """Refuse what cannot give an honest front, before anything is built."""
        if population < 2:
            raise DiswotError(f"--population must be at least 2 for NSGA-II; got {population}")
        if self.cfg.measures_latency and (backend != "local" or workers != 1):
            raise DiswotError(
                "latency is measured in the search's own process, and workers scoring beside it "
                "would slow it down; use --workers 1 (the default) with latency"
            )
        if self.cfg.measures_latency:
            self.cfg = replace(self.cfg, latency_device=str(device))

    # -- the run folder ------------------------------------------------------------------------------
    def bind(self, out: Path | None, resume: bool, recorded: list[dict]) -> None:
        """Take the run folder: on resume, check the stored Pareto settings and read back the
        run's id and its latency measurements."""
        cfg = self.cfg
        if cfg.storage is not None:
            name = cfg.study_name or f"diswot-{out.name if out is not None else 'search'}"
            cfg = replace(cfg, study_name=name, run_id=cfg.run_id or uuid.uuid4().hex)
        known: dict[str, dict] = {}
        if resume and out is not None:
            old = dict(read_settings(out).get(KEY) or {})
            new = to_settings(replace(cfg, storage=_hidden(cfg.storage)))
            refuse_other_settings(out, old, new, FIXED, "a Pareto search")
            cfg = replace(cfg, run_id=old.get("run_id"))
            known = LatencyMeter.read(out / LATENCIES)
            if cfg.storage is not None:
                self.replay = list(recorded)
        self.cfg = cfg
        self.known = known

    def settings(self) -> dict[str, Any]:
        """The ``pareto`` object of ``settings.json`` (the storage's password hidden)."""
        return {KEY: to_settings(replace(self.cfg, storage=_hidden(self.cfg.storage)))}

    def open(self, out: Path) -> None:
        """The run folder exists: journal the latency measurements there."""
        if self.meter is not None:
            self.meter.open(out / LATENCIES)

    # -- the pieces run_search uses ------------------------------------------------------------
    def admission(
        self, budget: Budget, num_classes: int, image_size: int, max_retries: int
    ) -> Admission:
        if not self.cfg.measures_latency:
            return Admission(self.space, budget, num_classes, image_size, max_retries)
        assert self.cfg.latency_device is not None  # set by check_run
        self.meter = LatencyMeter(
            self.space, num_classes, image_size,
            batch=self.cfg.latency_batch, warmup=self.cfg.latency_warmup,
            repeats=self.cfg.latency_repeats, device=self.cfg.latency_device,
            known=self.known,
        )  # fmt: skip
        return LatencyAdmission(
            self.space, budget, num_classes, image_size, max_retries,
            meter=self.meter, max_latency_ms=self.cfg.max_latency_ms,
        )  # fmt: skip

    def ledger(self, *args: Any) -> Ledger:
        """The search's ledger; with latency measured, one that records it in every record."""
        if self.meter is None:
            return Ledger(*args)
        return LatencyLedger(*args, meter=self.meter)

    def searcher(self, admission: Admission, seed: int, population: int, identity: dict) -> Any:
        """NSGA-II on the study (in memory, or created or loaded in the RDB storage)."""
        from diswot.search.searchers.nsga2 import NSGA2

        optuna = require_optuna()
        self._verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial on stderr
        sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
        directions = ["maximize"] + ["minimize"] * len(self.cfg.costs)
        try:
            self.study = optuna.create_study(
                storage=self.cfg.storage,
                study_name=self.cfg.study_name,
                directions=directions,
                sampler=sampler,
                load_if_exists=True,
            )
        except Exception as exc:  # a bad URL, an unreachable server, a study of other directions
            raise DiswotError(
                f"--storage {_hidden(self.cfg.storage)}: Optuna could not open study "
                f"'{self.cfg.study_name}': {str(exc).splitlines()[0]}"
            ) from exc
        identity = {**identity, "costs": list(self.cfg.costs), "genes": self.genome.kind}
        stored = self.study.user_attrs.get("diswot")
        if stored is None:
            self.study.set_user_attr("diswot", identity)
        elif stored != identity:
            differ = [k for k in identity if stored.get(k) != identity[k]]
            raise DiswotError(
                f"study '{self.cfg.study_name}' in {_hidden(self.cfg.storage)} holds another "
                f"search ({', '.join(differ)} differ); use another --study-name"
            )
        return NSGA2(
            admission,
            self.study,
            self.genome,
            self.cfg.costs,
            run=self.cfg.run_id or "memory",
            replay=self.replay,
        )

    # -- the result ----------------------------------------------------------------------------------
    def finish(self, result: SearchResult, records: list[dict], out: Path | None) -> ParetoResult:
        """The front, the winner's and every candidate's latency, files and plot in ``out``."""
        latency = {r["step"]: r.get("latency_ms") for r in records}

        def with_latency(rec: dict) -> dict:
            ms = latency.get(rec["step"])
            return rec if ms is None else {**rec, "latency_ms": ms}

        budget = result.budget
        if self.cfg.max_latency_ms is not None:
            c = self.cfg
            lat = (
                f"latency <= {c.max_latency_ms:g} ms (batch {c.latency_batch}, {c.latency_device})"
            )
            budget = lat if budget == "none" else f"{budget} and {lat}"
        fields = {k: getattr(result, k) for k in result.__dataclass_fields__}
        fields.update(
            winner=with_latency(result.winner),
            top=[with_latency(r) for r in result.top],
            candidates=[with_latency(r) for r in result.candidates],
            budget=budget,
            settings={**result.settings, **self.settings()},  # as settings.json holds them
        )
        front = pareto_front(records, self.cfg.costs)
        text = self.meter.last.text() if self.meter and self.meter.last else self._latency_text()
        res = ParetoResult(**fields, front=front, costs=self.cfg.costs, latency=text)
        if out is not None:
            res.write(out)
            self._plot(res, records, out)
        return res

    def _latency_text(self) -> str | None:
        """The measurement's conditions from the settings (a run resumed with nothing new)."""
        c = self.cfg
        if not c.measures_latency:
            return None
        return (
            f"median of {c.latency_repeats} runs after {c.latency_warmup} warm-up, batch "
            f"{c.latency_batch}, eval mode, fp32, on {c.latency_device}"
        )

    def _plot(self, res: ParetoResult, records: list[dict], out: Path) -> None:
        panels = list(self.cfg.costs)
        if self.cfg.measures_latency and "latency" not in panels:
            panels.append("latency")  # a latency budget is drawn where latency is
        b = res.settings.get("budget") or {}
        bounds = {
            "params": (b.get("min_params"), b.get("max_params")),
            "flops": (b.get("min_flops"), b.get("max_flops")),
            "latency": (None, self.cfg.max_latency_ms),
        }
        c = self.cfg
        labels = {
            "latency": f"latency (ms; median of {c.latency_repeats}, batch {c.latency_batch}, "
            f"{c.latency_device})",
        }
        s = res.settings
        title = (
            f"NSGA-II (Optuna) on {s['space']}, teacher {s['teacher']}: {res.n_scored} "
            f"candidates, {len(res.front)} on the front (maximise {s['objective']}, minimise "
            f"{', '.join(c.costs)})\nbudget: {res.budget}\nwinner = best score within the "
            f"budget: {res.winner['arch']}"
        )
        if self.space.flop_convention != "macs":
            labels["flops"] = f"FLOPs (millions, '{self.space.flop_convention}' convention)"
        plot_front(
            records, res.front, res.winner, panels, out / PARETO_PLOT,
            title=title, objective=s["objective"], bounds=bounds, labels=labels,
            searched=c.costs,
        )  # fmt: skip

    def close(self) -> None:
        if self.meter is not None:
            self.meter.close()
        if self._verbosity is not None:
            import optuna

            optuna.logging.set_verbosity(self._verbosity)


def _hidden(url: str | None) -> str | None:
    return None if url is None else hide_password(url)


__all__ = ["INSTALL", "ParetoPlan", "hide_password", "require_optuna"]
