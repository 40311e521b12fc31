"""Gemm, MatMul (batched, broadcast, 1-D operands) and Einsum."""

from __future__ import annotations

import string

from onnxsal.autodiff.engine import Ctx
from onnxsal.errors import UnsupportedModelError
from onnxsal.graph.builder import Builder, rank_of


def gemm(ctx: Ctx):
    b, g = ctx.b, ctx.g
    a, w = ctx.x[0], ctx.x[1]
    c = ctx.input(2)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    ta, tb = ctx.attr("transA", 0), ctx.attr("transB", 0)
    alpha = None if alpha == 1.0 else alpha
    out = [None, None, None]
    if ctx.wants[0]:
        out[0] = (
            b.Gemm(g, w, alpha=alpha, transB=1 - tb)
            if ta == 0
            else b.Gemm(w, g, alpha=alpha, transA=tb, transB=1)
        )
    if ctx.wants[1]:
        out[1] = (
            b.Gemm(a, g, alpha=alpha, transA=1 - ta)
            if tb == 0
            else b.Gemm(g, a, alpha=alpha, transA=1, transB=ta)
        )
    if c is not None and ctx.wants[2]:
        gc = g if beta == 1.0 else b.Mul(g, b.scalar(beta, ctx.y[0]))
        out[2] = b.sum_to(gc, c, ctx.y[0])
    return out


def _swap_last(b: Builder, v, rank: int):
    perm = list(range(rank))
    perm[-1], perm[-2] = perm[-2], perm[-1]
    return b.Transpose(v, perm=perm)


def _rank(v, op: str) -> int:
    r = rank_of(v)
    if r is None:
        raise UnsupportedModelError(
            f"{op}: the rank of '{v.name}' is unknown, so its gradient cannot be built. "
            "Re-export the model with static ranks (onnx shape inference must succeed)."
        )
    return r


def matmul(ctx: Ctx):
    b, g, y = ctx.b, ctx.g, ctx.y[0]
    a, w = ctx.x
    ra, rw = _rank(a, "MatMul"), _rank(w, "MatMul")
    if ra == 1 and rw == 1:
        return [b.Mul(g, w) if ctx.wants[0] else None, b.Mul(g, a) if ctx.wants[1] else None]
    a2 = a if ra > 1 else b.unsqueeze(a, [0])
    w2 = w if rw > 1 else b.unsqueeze(w, [1])
    ry = rank_of(y) if rank_of(y) is not None else max(ra, rw) - (ra == 1) - (rw == 1)
    # Promoted 1-D operands: g regains the axis the product dropped.
    g2 = b.unsqueeze(g, [ry - 1]) if ra == 1 else b.unsqueeze(g, [ry]) if rw == 1 else g
    r2 = max(ra, rw, 2)
    out = [None, None]
    if ctx.wants[0]:
        ga = b.MatMul(g2, _swap_last(b, w2, max(rw, 2)))
        out[0] = b.sum_to(ga, a, g_rank=r2)
    if ctx.wants[1]:
        gw = b.MatMul(_swap_last(b, a2, max(ra, 2)), g2)
        if rw == 1:
            gw = b.Squeeze(gw, b.ints([-1]))
        out[1] = b.sum_to(gw, w, g_rank=r2 - (rw == 1))
    return out


def _parse_einsum(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """Operand terms with '...' spelled out as letters, and the output term."""
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    used = set(eq)
    spare = [c for c in string.ascii_uppercase + string.ascii_lowercase if c not in used]
    ell_rank = max((r - (len(t) - 3) for t, r in zip(terms, ranks) if "..." in t), default=0)
    ell = "".join(spare[:ell_rank])
    out_terms = []
    for t, r in zip(terms, ranks):
        if "..." in t:
            n = r - (len(t) - 3)
            t = t.replace("...", ell[ell_rank - n :])
        out_terms.append(t)
    if "->" in eq:
        out = rhs.replace("...", ell)
    else:
        letters = "".join(out_terms)
        out = ell + "".join(
            sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ell)
        )
    return out_terms, out


def einsum(ctx: Ctx):
    b, g = ctx.b, ctx.g
    equation = ctx.attr("equation")
    ranks = [_rank(v, "Einsum") for v in ctx.x]
    terms, out_term = _parse_einsum(equation, ranks)
    grads = []
    for i, x in enumerate(ctx.x):
        if not ctx.wants[i]:
            grads.append(None)
            continue
        term = terms[i]
        if len(set(term)) != len(term):
            raise UnsupportedModelError(
                f"Einsum '{equation}': the gradient of an operand with a repeated index "
                f"('{term}', a diagonal) is not supported."
            )
        others = [t for j, t in enumerate(terms) if j != i]
        available = set(out_term).union(*map(set, others)) if others else set(out_term)
        kept = "".join(c for c in term if c in available)
        eq = ",".join([out_term, *others]) + "->" + kept
        gi = b.Einsum(g, *[v for j, v in enumerate(ctx.x) if j != i], equation=eq)
        dropped = [k for k, c in enumerate(term) if c not in available]
        if dropped:  # indices summed away inside operand i: broadcast back
            gi = b.expand_like(b.unsqueeze(gi, dropped), x)
        grads.append(b.sum_to(gi, x, g_rank=len(term)))
    return grads
