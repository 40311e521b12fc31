"""Elementwise arithmetic: broadcasting binary ops, variadic Sum/Mean/Max/Min, Where."""

from __future__ import annotations

from onnxsal.autodiff.engine import Ctx, wrt
from onnxsal.graph.builder import const_array


def _per_input(ctx: Ctx, local) -> list:
    """Apply `local(i, x_i)` to every wanted input and unbroadcast the result."""
    out = []
    for i, x in enumerate(ctx.x):
        if ctx.wants[i]:
            out.append(ctx.b.sum_to(local(i, x), x, ctx.y[0]))
        else:
            out.append(None)
    return out


def add(ctx: Ctx):
    return _per_input(ctx, lambda i, x: ctx.g)


def sub(ctx: Ctx):
    return _per_input(ctx, lambda i, x: ctx.g if i == 0 else ctx.b.Neg(ctx.g))


def mul(ctx: Ctx):
    a, c = ctx.x
    return _per_input(ctx, lambda i, x: ctx.b.Mul(ctx.g, c if i == 0 else a))


def div(ctx: Ctx):
    b, g = ctx.b, ctx.g
    _, c = ctx.x
    return _per_input(
        ctx, lambda i, x: b.Div(g, c) if i == 0 else b.Neg(b.Div(b.Mul(g, ctx.y[0]), c))
    )


def sum_(ctx: Ctx):
    return _per_input(ctx, lambda i, x: ctx.g)


def mean(ctx: Ctx):
    share = ctx.b.Div(ctx.g, ctx.b.scalar(len(ctx.x), ctx.y[0]))
    return _per_input(ctx, lambda i, x: share)


def max_min(ctx: Ctx):
    """Elementwise Max/Min: ties share the gradient equally (torch's convention)."""
    b, g, y = ctx.b, ctx.g, ctx.y[0]
    if len(ctx.x) == 1:
        return [g]
    hits = [b.mask(b.Equal(x, y), y) for x in ctx.x]
    count = b.Sum(*hits) if len(hits) > 1 else hits[0]
    share = b.Div(g, count)
    return _per_input(ctx, lambda i, x: b.Mul(share, hits[i]))


@wrt(1, 2)
def where(ctx: Ctx):
    b, g = ctx.b, ctx.g
    cond = ctx.x[0]
    zero = b.scalar(0.0, ctx.y[0])
    return _per_input(
        ctx, lambda i, x: b.Where(cond, g, zero) if i == 1 else b.Where(cond, zero, g)
    )


def pow_(ctx: Ctx):
    b, g, y = ctx.b, ctx.g, ctx.y[0]
    base, exponent = ctx.x

    def local(i, x):
        if i == 0:
            p = const_array(exponent)
            if p is not None and p.size == 1:
                p = float(p.reshape(()))
                if p == 2.0:
                    return b.Mul(g, b.Mul(base, b.scalar(2.0, y)))
                return b.Mul(g, b.Mul(b.scalar(p, y), b.Pow(base, b.scalar(p - 1.0, y))))
            pf = b.Cast(exponent, to=y.dtype)
            return b.Mul(g, b.Mul(pf, b.Pow(base, b.Sub(pf, b.scalar(1.0, y)))))
        # d/dp base^p = base^p * ln(base); torch puts 0 where base == 0.
        zero = b.scalar(0.0, y)
        safe = b.Where(b.Equal(base, zero), b.scalar(1.0, y), base)
        return b.Mul(g, b.Where(b.Equal(base, zero), zero, b.Mul(y, b.Log(safe))))

    return _per_input(ctx, local)
