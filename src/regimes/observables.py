"""What the regimes study measures at a checkpoint: weight norms, per-split statistics of the
centred output and, optionally, the neural tangent kernel and the gradient noise on n points."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap


def weight_norms(model: nn.Module, w0: dict[str, Tensor]) -> dict[str, float]:
    """Per-layer ||W||^2 and ||W - W0||^2 (`norm2/<name>`, `dnorm2/<name>`), and their totals'
    square roots `norm` = ||w|| and `dnorm` = ||w - w0|| over all parameters."""
    out: dict[str, Tensor] = {}
    for name, p in model.named_parameters():
        out[f"norm2/{name}"] = p.detach().pow(2).sum()
        out[f"dnorm2/{name}"] = (p.detach() - w0[name]).pow(2).sum()
    values = dict(zip(out, torch.stack(list(out.values())).tolist(), strict=True))
    values["norm"] = sum(v for k, v in values.items() if k.startswith("norm2/")) ** 0.5
    values["dnorm"] = sum(v for k, v in values.items() if k.startswith("dnorm2/")) ** 0.5
    return values


def split_stats(pred: Tensor, y: Tensor, alpha: float,
                phi: Callable[[Tensor], Tensor]) -> dict[str, float]:
    """Statistics of the centred output `pred` (N,) against labels `y` (N,) in {-1, +1}.

    loss = mean phi(alpha y pred) / alpha; aloss = alpha * loss; err = fraction with y pred <= 0;
    margin = min alpha y pred; nd = number of points with alpha y pred < 1 (not yet fitted);
    pred_mean, pred_var = mean and variance of alpha * pred.
    """
    z = alpha * y * pred
    loss = phi(z).mean() / alpha
    apred = alpha * pred
    stats = torch.stack([loss, loss * alpha, (z <= 0).double().mean(), z.min(),
                         (z < 1).double().sum(), apred.mean(), apred.var(unbiased=False),
                         torch.isfinite(apred).all().double()])
    keys = ("loss", "aloss", "err", "margin", "nd", "pred_mean", "pred_var")
    *values, finite = stats.double().tolist()
    if not finite:
        # A diverged output: comparisons with NaN are False, so err and nd would read 0 (a
        # perfect fit). Every statistic of such an output is NaN (null in history.jsonl).
        return dict.fromkeys(keys, math.nan)
    out = dict(zip(keys, values, strict=True))
    out["nd"] = int(out["nd"])
    return out


def alignment(weight: Tensor, weight0: Tensor, x: Tensor, y: Tensor, pred: Tensor,
              alpha: float) -> dict[str, float]:
    """The perceptron's observables against the teacher direction e_1 (teacher_student).

    align = w_par^2 / (||w_perp||^2 / (d - 1)) (1 at initialisation on average, large once the
    weights point along the teacher; the seed's `ampli_factor`, whose code divides by d - 1
    where its formula multiplies); dw_par2 = (w_par - w0_par)^2 and
    dw_perp2 = ||w_perp - w0_perp||^2 / (d - 1), their changes since initialisation;
    x1_unfit = mean |x_1| over the training points not yet fitted (alpha y pred < 1; NaN when
    all are fitted).
    """
    w, w0 = weight.detach().flatten(), weight0.flatten()
    d = len(w)
    unfit = alpha * y * pred < 1
    values = torch.stack([
        w[0] ** 2 / (w[1:].pow(2).sum() / (d - 1)),
        (w[0] - w0[0]) ** 2,
        (w[1:] - w0[1:]).pow(2).sum() / (d - 1),
        x[unfit, 0].abs().mean() if bool(unfit.any()) else torch.tensor(math.nan)])
    return dict(zip(("align", "dw_par2", "dw_perp2", "x1_unfit"), values.double().tolist(),
                    strict=True))


def jacobian(model: nn.Module, x: Tensor, chunk: int = 64) -> Tensor:
    """J[i] = d f(x_i) / d w for a scalar-output model: (n, number of parameters)."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p: dict[str, Tensor], xi: Tensor) -> Tensor:
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze()

    rows = vmap(jacrev(f), in_dims=(None, 0), chunk_size=chunk)(params, x)
    return torch.cat([rows[k].reshape(len(x), -1) for k in params], dim=1)


def ntk_stats(model: nn.Module, x: Tensor, y: Tensor, pred: Tensor, alpha: float,
              phi: Callable[[Tensor], Tensor],
              k0: Tensor | None) -> tuple[dict[str, float], Tensor, dict[str, str]]:
    """NTK Gram matrix K = J J^T on the n points `x` and the gradient noise there.

    Returns (stats, K, notes). stats: ntk_delta = mean((K - K0)^2), ntk_delta_rel = that /
    mean(K0^2), ntk_norm = ||K||_F, ntk_yKy = y^T K y, ntk_yKinvy = y^T K^+ y / n^2
    (pseudo-inverse), grad_norm = ||mean_i g_i|| and grad_var = mean_i ||g_i - mean g||^2, where
    g_i is the gradient of sample i's loss: the noise of an SGD step on a batch of B is
    grad_var / B. notes: why an observable that could not be computed is NaN (the
    pseudo-inverse's eigensolver does not always converge on an ill-conditioned K, and which
    matrices it gives up on depends on the CPU's kernels), keyed by that observable.
    """
    jac = jacobian(model, x)
    kernel = jac @ jac.t()
    k0 = kernel if k0 is None else k0
    z = (alpha * y * pred).detach().requires_grad_(True)
    # d loss_i / d pred_i = phi'(z_i) * y_i (the 1/alpha of the loss cancels alpha in z).
    (dz,) = torch.autograd.grad(phi(z).sum(), z)
    grads = (dz * y).unsqueeze(1) * jac
    mean_grad = grads.mean(0)
    n = len(x)
    notes = {}
    try:
        y_kinv_y = y @ torch.linalg.pinv(kernel, hermitian=True) @ y / n**2
    except torch.linalg.LinAlgError as e:
        y_kinv_y = torch.tensor(math.nan, dtype=kernel.dtype, device=kernel.device)
        notes["ntk_yKinvy"] = f"NaN: the pseudo-inverse of K failed ({str(e).split(':')[0]})"
    stats = torch.stack([
        (kernel - k0).pow(2).mean(), (kernel - k0).pow(2).mean() / k0.pow(2).mean(),
        kernel.norm(), y @ kernel @ y, y_kinv_y, mean_grad.norm(),
        (grads - mean_grad).pow(2).sum(1).mean()])
    keys = ("ntk_delta", "ntk_delta_rel", "ntk_norm", "ntk_yKy", "ntk_yKinvy", "grad_norm",
            "grad_var")
    return dict(zip(keys, stats.double().tolist(), strict=True)), kernel, notes
