"""Layer kinds from the structure of the traced forward (names are only a fallback).

On the :class:`~workers.curvature.graph.ForwardGraph` of one forward:

* **head**: a linear use whose output reaches the model output without passing through
  another matrix; ``logits`` additionally when the path is only bias/residual additions,
  scalar scalings and reshapes, so that the loss gradient at the layer output is the
  gradient at the logits (softmax cross-entropy: 1ᵀδ = 0 for every example and position);
* **attention**: a softmax whose input is a data × data matmul S = A Bᵀ (up to scalings,
  masks and biases) and whose output multiplies a third tensor V: the matrices feeding A, B
  and V are q, k and v, the matrix reading the product (up to reshapes) is o; one matrix
  feeding all three is a fused qkv. ``scaled_dot_product_attention(q, k, v)`` is read the
  same way;
* **mlp**: expand–nonlinearity–contract, d → D → d with D > d: a matrix whose input is a
  non-linear function (activation, gating) of matrices that read width d and write width D.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from api_schemas import LayerKind
from workers.curvature.graph import MATRIX_ROLES, ForwardGraph, OpNode, WeightUse

_SHAPE = frozenset(
    {
        "view",
        "reshape",
        "flatten",
        "contiguous",
        "transpose",
        "permute",
        "t",
        "T",
        "mT",
        "squeeze",
        "unsqueeze",
        "expand",
        "to",
        "float",
        "double",
        "half",
        "type",
        "type_as",
        "clone",
        "detach",
        "__getitem__",
        "split",
        "chunk",
        "unbind",
        "narrow",
        "select",
        "dropout",
        "alias",
        "unsafe_view",
        "_unsafe_view",
    }
)
_LOGIT_PASS = frozenset(
    {
        "view",
        "reshape",
        "flatten",
        "contiguous",
        "squeeze",
        "unsqueeze",
        "to",
        "float",
        "double",
        "type",
        "clone",
        "dropout",
        "add",
        "sub",
        "alias",
        "_unsafe_view",
    }
)
_SELECTS = frozenset({"__getitem__", "split", "chunk", "unbind", "narrow", "select"})
_SCALINGS = frozenset({"mul", "div"})
_SCORE_OPS = _SHAPE | {"mul", "div", "add", "sub", "masked_fill", "where", "tanh", "clamp"}
_SCORE_MATMULS = frozenset({"matmul", "einsum", "baddbmm"})
_SOFTMAX = frozenset({"softmax"})
_SDPA = "scaled_dot_product_attention"
_WALK_LIMIT = 64


@dataclass
class Structure:
    """Kinds by the node of each matrix use, and which head uses produce the logits."""

    kinds: dict[int, LayerKind] = field(default_factory=dict)
    logits: set[int] = field(default_factory=set)
    qkv_thirds: set[int] = field(default_factory=set)  # fused qkv outputs split in 3 blocks


def _matrix_nodes(graph: ForwardGraph) -> dict[int, WeightUse]:
    return {u.node: u for u in graph.uses if u.role in MATRIX_ROLES or u.role == "embedding"}


def _walk(
    graph: ForwardGraph,
    starts: Iterable[int],
    through: Callable[[OpNode], bool],
    stops: dict[int, WeightUse],
    *,
    backward: bool = True,
    require: Callable[[OpNode], bool] | None = None,
) -> set[int]:
    """Matrix-use nodes reached from ``starts`` (included) through nodes ``through`` accepts,
    not past a matrix. With ``require``, only those reached on a path through at least one
    node it accepts."""
    found: set[int] = set()
    queue: deque[tuple[int, bool]] = deque()
    seen: set[tuple[int, bool]] = set()

    def visit(index: int, ok: bool) -> None:
        if index in stops:
            if ok and stops[index].role != "embedding":
                found.add(index)
            return
        node = graph.nodes[index]
        ok = ok or (require is not None and require(node))
        if through(node) and (index, ok) not in seen and len(seen) < _WALK_LIMIT * 8:
            seen.add((index, ok))
            queue.append((index, ok))

    for start in starts:
        visit(start, require is None)
    while queue:
        index, ok = queue.popleft()
        node = graph.nodes[index]
        for nxt in [p for p, _ in node.inputs] if backward else graph.children.get(index, []):
            visit(nxt, ok)
    return found


def analyse(graph: ForwardGraph) -> Structure:
    """Structural kinds of every matrix use of ``graph`` (see the module docstring)."""
    out = Structure()
    stops = _matrix_nodes(graph)
    linear = {n for n, u in stops.items() if u.role in ("linear", "bilinear")}
    if graph.output is not None:
        reached_any = _walk(graph, [graph.output], lambda n: True, stops)
        reached_logits = _walk(graph, [graph.output], _passes_logits, stops)
        for n in reached_any & linear:
            out.kinds[n] = "head"
        out.logits = reached_logits & linear
    _attention(graph, stops, linear, out)
    _mlp(graph, stops, linear, out)
    return out


def _passes_logits(node: OpNode) -> bool:
    if node.op in _LOGIT_PASS:
        return True
    return node.op in _SCALINGS and len(node.inputs) == 1  # a scalar scaling


def _not_softmax(node: OpNode) -> bool:
    return node.op not in _SOFTMAX and node.op != _SDPA


def _sources(graph: ForwardGraph, node: int, stops: dict[int, WeightUse]) -> set[int]:
    """The matrices feeding data tensor ``node`` (itself when it is one)."""
    return _walk(graph, [node], _not_softmax, stops)


def _attention(
    graph: ForwardGraph, stops: dict[int, WeightUse], linear: set[int], out: Structure
) -> None:
    for node in graph.nodes:
        qkv: tuple[set[int], set[int], set[int]] | None = None
        product: int | None = None
        if node.op == _SDPA and len(node.inputs) >= 3:
            q, k, v = (_sources(graph, p, stops) for p, _ in node.inputs[:3])
            qkv, product = (q, k, v), node.index
        elif node.op in _SOFTMAX:
            qkv, product = _softmax_attention(graph, node, stops)
        if qkv is None or product is None:
            continue
        q, k, v = (s & linear for s in qkv)
        fused = q & k & v
        for n in fused:
            out.kinds[n] = "attn_qkv"
            if _split_in_thirds(graph, n):
                out.qkv_thirds.add(n)
        sides: tuple[tuple[set[int], LayerKind], ...] = (
            (q, "attn_q"),
            (k, "attn_k"),
            (v, "attn_v"),
        )
        for side, kind in sides:
            for m in side - fused:
                out.kinds.setdefault(m, kind)
        readers = graph.children.get(product, [])
        for n in _walk(graph, readers, _reshapes_heads, stops, backward=False):
            if n in linear and out.kinds.get(n) != "head":
                out.kinds[n] = "attn_o"


def _reshapes_heads(node: OpNode) -> bool:
    """Ops between P·V and the output projection: merging heads, not selecting from them."""
    return node.op in _SHAPE and node.op not in _SELECTS


def _softmax_attention(
    graph: ForwardGraph, softmax: OpNode, stops: dict[int, WeightUse]
) -> tuple[tuple[set[int], set[int], set[int]] | None, int | None]:
    scores = _first_nodes(graph, softmax.index, _SCORE_OPS, _SCORE_MATMULS, backward=True)
    after = _first_nodes(
        graph, softmax.index, _SHAPE | {"mul", "masked_fill"}, _SCORE_MATMULS, backward=False
    )
    if not scores or not after:
        return None, None
    q: set[int] = set()
    k: set[int] = set()
    for s in scores:
        inputs = graph.nodes[s].inputs
        if len(inputs) >= 2:
            q |= _sources(graph, inputs[-2][0], stops)
            k |= _sources(graph, inputs[-1][0], stops)
    product = after[0]
    reaches = _ancestors_within(graph, product, softmax.index)
    v: set[int] = set()
    for parent, _ in graph.nodes[product].inputs:
        if parent not in reaches:
            v |= _sources(graph, parent, stops)
    return (q, k, v), product


def _first_nodes(
    graph: ForwardGraph,
    start: int,
    through: frozenset[str],
    targets: frozenset[str],
    *,
    backward: bool,
) -> list[int]:
    """Nodes with an op in ``targets`` first reached from ``start`` through ``through`` ops."""
    found: list[int] = []
    queue = deque([start])
    seen = {start}
    while queue and len(seen) < _WALK_LIMIT:
        index = queue.popleft()
        nexts = (
            [p for p, _ in graph.nodes[index].inputs] if backward else graph.children.get(index, [])
        )
        for nxt in nexts:
            if nxt in seen:
                continue
            seen.add(nxt)
            node = graph.nodes[nxt]
            if node.op in targets and not node.uses:
                found.append(nxt)
            elif node.op in through and not node.uses:
                queue.append(nxt)
    return found


def _ancestors_within(graph: ForwardGraph, node: int, root: int) -> set[int]:
    """Inputs of ``node`` that descend from ``root`` through at most a few ops (the P side)."""
    side: set[int] = set()
    for parent, _ in graph.nodes[node].inputs:
        frontier, steps = {parent}, 0
        while frontier and steps < 8:
            if root in frontier:
                side.add(parent)
                break
            frontier = {p for f in frontier for p, _ in graph.nodes[f].inputs}
            steps += 1
    return side


def _split_in_thirds(graph: ForwardGraph, node: int) -> bool:
    """Whether the fused output is cut into contiguous q | k | v row blocks: a three-way split
    of its last dimension, or a reshape to (…, 3, heads, head_dim)."""
    shape = graph.nodes[node].shapes[0]
    if not shape or shape[-1] % 3:
        return False
    width = shape[-1]
    children = list(graph.children.get(node, []))
    for child in children:  # through views that keep the feature axis (Conv1D's view back)
        c = graph.nodes[child]
        if c.op in ("view", "reshape", "contiguous") and c.shapes and c.shapes[0][-1] == width:
            children.extend(graph.children.get(child, []))
    third = width // 3
    for child in children:
        c = graph.nodes[child]
        if not c.inputs or not c.shapes:
            continue
        source = graph.nodes[c.inputs[0][0]].shapes[c.inputs[0][1]]
        lead = source[:-1]
        splits = c.op in ("split", "chunk", "split_with_sizes", "tensor_split")
        if splits and len(c.shapes) == 3 and all(s == (*lead, third) for s in c.shapes):
            return True
        new = c.shapes[0]
        if c.op in ("view", "reshape") and len(new) == len(lead) + 3 and new[: len(lead)] == lead:
            return new[len(lead)] == 3
    return False


def _mlp(
    graph: ForwardGraph, stops: dict[int, WeightUse], linear: set[int], out: Structure
) -> None:
    for down in sorted(linear):
        if out.kinds.get(down) is not None:
            continue
        d_out, d_in = _dims(graph, down)
        if d_in <= d_out:
            continue
        starts = [p for p, _ in graph.nodes[down].inputs]
        ups = _walk(graph, starts, _not_softmax, stops, require=lambda n: n.op not in _SHAPE)
        ups = {u for u in ups if u in linear and _dims(graph, u) == (d_in, d_out)}
        ups = {u for u in ups if out.kinds.get(u) in (None, "mlp_up")}
        if ups:
            out.kinds[down] = "mlp_down"
            for u in ups:
                out.kinds[u] = "mlp_up"


def _dims(graph: ForwardGraph, node: int) -> tuple[int, int]:
    """(out, in) of the matrix a linear use applies."""
    use = next(u for u in graph.nodes[node].uses if u.role in MATRIX_ROLES)
    return use.shape[0], use.shape[1]
