"""Feature access for any ``nn.Module`` through forward hooks.

DisWOT needs two things from each network: the input of the final classifier (to form the closed-form
gradient of its weight) and the feature map that enters global pooling (for the relation term). Rather
than require a ``forward_features`` method, :class:`FeatureExtractor` finds both with forward hooks, so a
user's own teacher works unchanged. Detection runs once, on the first forward pass, which must return
logits of shape ``(N, K)`` (a tensor, or a tuple/list whose first element is one); only leaf modules
(modules without children) and explicitly named modules are traced:

* the classifier is the last ``nn.Linear`` to run whose output has the logits' shape ``(N, K)``. Only
  the shape is compared, not the values: a same-shaped ``nn.Linear`` that runs after the real head
  would be taken, so name the head then. ``pooled`` is the classifier's (first) input;
* the feature map is the input of the last *global* pooling module that runs before the classifier: a
  pooling module (``AdaptiveAvgPool*``, ``AdaptiveMaxPool*``, ``AvgPool*``, ``MaxPool*``, ``LPPool*``)
  whose input has at least 3 dims and whose output, of the same rank, is 1 along every dim after
  ``(N, C)``, i.e. one that collapses the spatial extent (``AdaptiveAvgPool2d(1)``,
  ``AdaptiveMaxPool2d(1)``, or e.g. ``AvgPool2d(8)`` on an 8 x 8 map). Pools that leave a spatial
  extent (a stem ``MaxPool2d``, a stride-2 ``AvgPool2d`` between stages, a 3 x 3 stride-1 pool inside
  a cell) are never taken as the global pool. A squeeze-and-excitation pool is global too, so in a
  network that pools functionally after one, name the feature module;
* failing that (the network pools functionally: ``x.mean((2, 3))``, ``F.adaptive_avg_pool2d``, ...),
  the feature map is the output of the last leaf module to run before the classifier whose output is
  4-D; that can be a pooling module's output, which is then the map the functional pooling reads;
* for token models (ViTs) whose head reads a token, the user passes ``feature=`` naming the module
  whose *output* to take (the shipped ViTs route their final token map through an identity
  ``token_map``, which the 4-D rule above also finds).

Both can be named explicitly (``classifier="fc"``, ``feature="layer3"``, dotted module names as in
``named_modules()``); a named feature module contributes its output.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from diswot.errors import DiswotError

_POOLS: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.LPPool1d,
    nn.LPPool2d,
    *((nn.LPPool3d,) if hasattr(nn, "LPPool3d") else ()),
)


def _is_global_pool(mod: nn.Module, inp: Tensor | None, out: Tensor | None) -> bool:
    """Whether ``mod`` is a pooling module that collapsed its input's spatial extent to 1."""
    return (
        isinstance(mod, _POOLS)
        and inp is not None
        and out is not None
        and inp.dim() >= 3
        and out.dim() == inp.dim()
        and all(s == 1 for s in out.shape[2:])
    )


class Features(NamedTuple):
    """What one forward pass exposes: logits, pre-pool feature map, classifier input."""

    logits: Tensor
    feature_map: Tensor
    pooled: Tensor


def _first_tensor(x: object) -> Tensor | None:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], Tensor):
        return x[0]
    return None


class FeatureExtractor:
    """Run a model and return :class:`Features`; hooks are installed once and reused.

    Args:
        model: any module mapping images to logits ``(N, K)``.
        classifier: dotted name of the final ``nn.Linear``; auto-detected when ``None``.
        feature: dotted name of the module whose *output* is the pre-pool feature; when ``None`` it is
            detected as the module docstring says (input of the last global pooling module, else the
            last 4-D leaf output before the classifier).
    """

    def __init__(
        self, model: nn.Module, classifier: str | None = None, feature: str | None = None
    ) -> None:
        self.model = model
        self.classifier_name = classifier
        self.feature_name = feature
        self._modules = dict(model.named_modules())
        for name, what in ((classifier, "classifier"), (feature, "feature")):
            if name is not None and name not in self._modules:
                raise DiswotError(
                    f"{what} module '{name}' not found in {type(model).__name__}; "
                    "pass a name from model.named_modules()"
                )
        if classifier is not None and not isinstance(self._modules[classifier], nn.Linear):
            raise DiswotError(
                f"classifier '{classifier}' is a {type(self._modules[classifier]).__name__}, "
                "not nn.Linear; name the final Linear layer"
            )
        self._feature_from_output = feature is not None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._store: dict[str, Tensor] = {}
        self._detected = False

    # -- detection -------------------------------------------------------------------------------
    def _detect(self, x: Tensor) -> Features:
        """Trace one forward pass, pick classifier and feature module, and return its features.

        The traced pass doubles as the first real pass, so detection costs no extra forward.
        """
        trace: list[tuple[str, nn.Module, Tensor | None, Tensor | None]] = []
        handles = []
        for name, mod in self._modules.items():
            if name == "" or (len(list(mod.children())) > 0 and name not in self._named()):
                continue

            def hook(m: nn.Module, inp: tuple, out: object, _n: str = name) -> None:
                trace.append((_n, m, _first_tensor(inp), _first_tensor(out)))

            handles.append(mod.register_forward_hook(hook))
        try:
            out = self.model(x)
        finally:
            for h in handles:
                h.remove()
        logits = _first_tensor(out)
        if logits is None or logits.dim() != 2:
            raise DiswotError(
                f"{type(self.model).__name__} must return logits of shape (N, classes); "
                f"got {None if logits is None else tuple(logits.shape)}"
            )
        if self.classifier_name is None:
            for i in range(len(trace) - 1, -1, -1):
                name, mod, _, o = trace[i]
                if isinstance(mod, nn.Linear) and o is not None and o.shape == logits.shape:
                    self.classifier_name = name
                    break
            else:
                raise DiswotError(
                    f"no nn.Linear classifier producing the logits found in {type(self.model).__name__}; "
                    "pass classifier=<module name> or give the model a final nn.Linear"
                )
        cls_idx = max(i for i, t in enumerate(trace) if t[0] == self.classifier_name)
        before = trace[:cls_idx]
        if self.feature_name is None:
            for name, mod, inp, o in reversed(before):
                if _is_global_pool(mod, inp, o):
                    self.feature_name = name
                    break
            else:
                for name, _, _, o in reversed(before):
                    if o is not None and o.dim() == 4:
                        self.feature_name = name
                        self._feature_from_output = True
                        break
                else:
                    raise DiswotError(
                        f"no pre-pool feature map found in {type(self.model).__name__}; "
                        "pass feature=<module name> whose output is the feature map"
                    )
        self._detected = True
        feat = [t for t in before if t[0] == self.feature_name]
        if not feat:
            raise DiswotError(
                f"feature module '{self.feature_name}' did not run before the classifier; "
                "name a module that runs in forward()"
            )
        _, _, f_in, f_out = feat[-1]
        feature_map = f_out if self._feature_from_output else f_in
        pooled = trace[cls_idx][2]
        assert feature_map is not None and pooled is not None
        return Features(logits, feature_map, pooled)

    def _named(self) -> set[str]:
        return {n for n in (self.classifier_name, self.feature_name) if n is not None}

    def _install(self) -> None:
        cls_mod = self._modules[self.classifier_name]
        feat_mod = self._modules[self.feature_name]

        def cls_hook(m: nn.Module, inp: tuple) -> None:
            self._store["pooled"] = inp[0]

        if self._feature_from_output:

            def feat_hook(m: nn.Module, inp: tuple, out: object) -> None:
                self._store["feature_map"] = _first_tensor(out)

            self._handles.append(feat_mod.register_forward_hook(feat_hook))
        else:

            def feat_pre_hook(m: nn.Module, inp: tuple) -> None:
                self._store["feature_map"] = inp[0]

            self._handles.append(feat_mod.register_forward_pre_hook(feat_pre_hook))
        self._handles.append(cls_mod.register_forward_pre_hook(cls_hook))

    # -- public -----------------------------------------------------------------------------------
    @property
    def classifier(self) -> nn.Linear:
        if self.classifier_name is None:
            raise DiswotError("run the extractor once before asking for its classifier")
        return self._modules[self.classifier_name]  # type: ignore[return-value]

    def __call__(self, x: Tensor) -> Features:
        if not self._detected:
            return self._detect(x)
        if not self._handles:
            self._install()
        self._store.clear()
        out = _first_tensor(self.model(x))
        if out is None or "pooled" not in self._store or "feature_map" not in self._store:
            raise DiswotError(
                f"hooks on '{self.classifier_name}'/'{self.feature_name}' did not fire; "
                "name modules that run in forward()"
            )
        return Features(out, self._store.pop("feature_map"), self._store.pop("pooled"))

    def close(self) -> None:
        """Remove the hooks, leaving the model as it was."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> FeatureExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
