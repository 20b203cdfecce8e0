"""G for many layers from one set of C reverse passes (docs/engine.md, step 5).

For a layer with output z and a model with C outputs f_b ∈ ℝ^C per example,
G_l[c, b] = ∂f_{b,c}/∂z_{l,b} (``ggn_reverse.py``). Back-propagating the C one-hot cotangents
e_c from the output once, vmapped, passes through every layer between the output and the
deepest layer wanted, so every G_l on the way comes at the price of the deepest one alone:

    f(ε_1, …, ε_L) = the model with z_l replaced by z_l + ε_l,    G_l = ∂f/∂ε_l at ε = 0,

one ``torch.func.vjp`` in all the ε_l and one vmapped pullback of the C cotangents. As with a
single layer, G_l[c, b] = ∂f_{b,c}/∂z_{l,b} needs examples that do not interact above the
layer; the engine uses G_l only on a layer whose route check (run by the same reverse-pass
implementation, on chunks of its sub-batch) passed.

``LayerJacobians`` takes them lazily: the first layer asked for starts one pass for itself and
for every later layer still waiting, as many as fit within the element bound.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import vjp, vmap

from workers.curvature.ggn_jacobian import MAX_ELEMENTS, MAX_OUTPUTS
from workers.curvature.ggn_output import rank_one_layer
from workers.curvature.ggn_reverse import OutputJacobian, outputs_per_example
from workers.curvature.inventory import LayerSpec
from workers.curvature.measurement import Batch

LayerIO = dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]  # (input, output) per layer


def _layer_io(
    model: nn.Module, batch: Batch, modules: Sequence[nn.Module]
) -> tuple[LayerIO, torch.Tensor] | None:
    """((input a, output z) of each module's one call on ``batch``, the model output); None
    when one of them is called other than once."""
    seen: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] = {m: [] for m in modules}

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen[m].append((inputs[0].detach(), out.detach()))

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.no_grad():
            out = batch.forward(model)
    finally:
        for handle in handles:
            handle.remove()
    if any(len(calls) != 1 for calls in seen.values()):
        return None
    return {m: calls[0] for m, calls in seen.items()}, out


def joint_output_jacobians(
    model: nn.Module,
    batch: Batch,
    modules: Sequence[nn.Module],
    max_outputs: int,
    io: LayerIO | None = None,
) -> dict[nn.Module, OutputJacobian] | None:
    """Every module's OutputJacobian on ``batch`` from one vmapped pullback, or None when a
    module is not called exactly once, the output's first dimension is not the example, or
    C > ``max_outputs``. ``io``: the modules' (input, output) on ``batch`` where a probe
    already took them."""
    if io is None:
        probed = _layer_io(model, batch, modules)
        if probed is None:
            return None
        io = probed[0]
    order = list(modules)
    zeros = tuple(torch.zeros_like(io[m][1]) for m in order)

    def perturbed(*eps: torch.Tensor) -> torch.Tensor:
        shift = dict(zip(order, eps, strict=True))

        def hook(m: nn.Module, _args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
            return out + shift[m]

        handles = [m.register_forward_hook(hook) for m in order]
        try:
            return batch.forward(model)
        finally:
            for handle in handles:
                handle.remove()

    out, pullback = vjp(perturbed, *zeros)[:2]
    examples = batch.inputs.shape[0]
    C = outputs_per_example(out, examples)
    if C is None or max_outputs < C or any(z.shape[0] != examples for z in zeros):
        return None
    eye = torch.eye(C, dtype=out.dtype, device=out.device)
    cotangents = eye.reshape(C, 1, *out.shape[1:]).expand(C, *out.shape)
    grads = vmap(pullback)(cotangents)
    out = out.detach()
    return {m: OutputJacobian(batch, io[m][0], out, G) for m, G in zip(order, grads, strict=True)}


class LayerJacobians:
    """Every micro-batch's G for the layers of one profile, taken in joint passes on demand.

    The modules are listed in the order the profile visits them. ``take(module)`` hands over
    (and forgets) the module's G, one OutputJacobian per micro-batch, starting a joint pass
    for it and for the modules listed after it that are still waiting (while C·N·numel(z_b)
    of all those taken stays within ``max_elements``); None where the module was never
    listed, was handed over already, or its pass was refused."""

    def __init__(
        self,
        model: nn.Module,
        micro_batches: list[Batch],
        modules: Sequence[nn.Module],
        max_outputs: int,
        max_elements: int,
    ) -> None:
        self._model, self._micro = model, micro_batches
        self._waiting = list(modules)
        self._max_outputs, self._max_elements = max_outputs, max_elements
        self._held: dict[nn.Module, list[OutputJacobian]] = {}

    @classmethod
    def for_profile(
        cls, model: nn.Module, micro_batches: list[Batch], specs: Sequence[LayerSpec]
    ) -> LayerJacobians:
        """For the layers of ``specs`` the rank-1 GGN route applies to
        (``ggn_output.rank_one_layer``), in their order, within ``ggn_jacobian``'s bounds."""
        modules = [m for m in (rank_one_layer(model, s) for s in specs) if m is not None]
        return cls(model, micro_batches, modules, MAX_OUTPUTS, MAX_ELEMENTS)

    def asker(self, spec: LayerSpec) -> Callable[[], list[OutputJacobian] | None] | None:
        """What ``routes.routed_curvature`` calls for the layer's G; None where the rank-1
        route does not apply to it."""
        module = rank_one_layer(self._model, spec)
        return None if module is None else lambda: self.take(module)

    def take(self, module: nn.Module) -> list[OutputJacobian] | None:
        if module not in self._held and module in self._waiting:
            self._pass_for(module)
        return self._held.pop(module, None)

    def _pass_for(self, module: nn.Module) -> None:
        later = self._waiting[self._waiting.index(module) + 1 :]  # those before it are done
        chosen, first_io = self._within_bound([module, *later])
        self._waiting = [m for m in later if m not in chosen]
        if not chosen:
            return
        per_batch = []
        for index, batch in enumerate(self._micro):
            io = first_io if index == 0 else None  # the bound's probe was this batch's
            try:
                found = joint_output_jacobians(self._model, batch, chosen, self._max_outputs, io)
            except (RuntimeError, NotImplementedError):  # e.g. an op with no batching rule:
                return  # each route takes its own passes, or falls back as it would have
            if found is None:
                return
            per_batch.append(found)
        for m in chosen:
            self._held[m] = [found[m] for found in per_batch]

    def _within_bound(self, modules: list[nn.Module]) -> tuple[list[nn.Module], LayerIO]:
        """The leading modules whose G together fit (C·N·numel(z_b) each, N examples in all,
        from one forward without gradients; none when the first alone does not), and that
        forward's (input, output) of each module on the first micro-batch."""
        first = self._micro[0]
        probed = _layer_io(self._model, first, modules)
        if probed is None:
            return [], {}
        io, out = probed
        C = outputs_per_example(out, first.inputs.shape[0])
        if C is None or self._max_outputs < C:
            return [], io
        examples = sum(b.inputs.shape[0] for b in self._micro)
        chosen: list[nn.Module] = []
        total = 0
        for m in modules:
            z = io[m][1]
            total += C * examples * (z[0].numel() if z.dim() > 0 else 1)
            if total > self._max_elements:
                break
            chosen.append(m)
        return chosen, io
