"""Peers for `reveal bench --arch`: the CNN reconstruction step and training step in PyTorch and JAX.

The same workload as `reveal bench --arch conv:32k3,conv:64k3s2,fc:1000 --input 1x28x28` times
(`--input 3x32x32` for CIFAR-10's images): m = 200 candidates, n = 100 training images, float32,
one binary output, a bias in the first layer only.

Reconstruction step (the KKT loss of Haim et al. 2022, as reveal computes it): the modified ReLU
(forward relu(z), derivative s = sigma(alpha z) in every pass, alpha = 20), G_p = (1/m) sum_i
lambda_i y_i grad_p f(x_i) from one batched backward recorded for a second differentiation,
loss = sum_p ||p - G_p||^2 + sum relu(x - 1)^2 + sum relu(-1 - x)^2 + 5 sum relu(lambda_min - lambda)^2
(lambda_min = 0.45), gradients w.r.t. x and lambda only, then SGD with momentum 0.9 (lr 0.1 for x,
1e-4 for lambda). Training step: mean log(1 + exp(-y f(x))) with the exact ReLU, its gradient
w.r.t. every parameter, one plain step (lr 0.01).

    python benches/peer_cnn.py --framework torch --threads 2
    python benches/peer_cnn.py --framework jax --threads 2 --input 3x32x32
    reveal bench --arch conv:32k3,conv:64k3s2,fc:1000 --json

Each prints one JSON line with the field names of `reveal bench --json` (recon_step_s,
train_step_s, median of --steps after 3 warm-up steps). Needs numpy and torch or jax.
"""
import argparse
import json
import os
import time

import numpy as np

ALPHA, LAMBDA_MIN = 20.0, 0.45


def parse_arch(spec):
    """conv:<out>k<k>[s<s>][p<p>] and fc:<width> items -> [("conv", out, k, s, p), ("fc", width)]."""
    import re
    layers = []
    for part in spec.split(","):
        kind, _, rest = part.partition(":")
        if kind == "conv":
            out, k, s, p = re.fullmatch(r"(\d+)k(\d+)(?:s(\d+))?(?:p(\d+))?", rest).groups()
            layers.append(("conv", int(out), int(k), int(s or 1), int(p or 0)))
        elif kind == "fc":
            layers.append(("fc", int(rest)))
        else:
            raise SystemExit(f"{part}: only conv and fc layers here")
    return layers


def init_params(layers, c, h, w, rng):
    """Weights as PyTorch lays them out, U(+-1/sqrt(fan_in)); a bias on the first layer only."""
    params, shapes = [], []
    flat = None
    for i, layer in enumerate(layers + [("fc", 1)]):
        if layer[0] == "conv":
            _, out, k, s, p = layer
            shape, fan_in = (out, c, k, k), c * k * k
            c, h, w = out, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        else:
            fan_in = flat if flat is not None else c * h * w
            shape, flat = (layer[1], fan_in), layer[1]
        bound = 1 / np.sqrt(fan_in)
        params.append(rng.uniform(-bound, bound, shape).astype(np.float32))
        if i == 0:
            params.append(rng.uniform(-bound, bound, shape[0]).astype(np.float32))
        shapes.append(layer)
    return params, shapes


def with_params(layers, theta):
    """Each layer (the output layer appended) with its weight, its bias (the first layer's only)
    and whether it is the last, from theta in init_params's order."""
    i = 0
    for k, layer in enumerate(layers + [("fc", 1)]):
        yield layer, theta[i + (k > 0)], (theta[1] if k == 0 else None), k == len(layers)
        i += 1


def median_time(step, steps):
    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def torch_steps(layers, params, x, lam, y, tx, ty, shape):
    import torch
    import torch.nn.functional as F

    class ModifiedRelu(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            ctx.save_for_backward(z)
            return z.clamp(min=0)

        @staticmethod
        def backward(ctx, g):
            (z,) = ctx.saved_tensors
            return g * torch.sigmoid(ALPHA * z)  # differentiable, so create_graph sees it

    theta = [torch.tensor(p) for p in params]

    def f(theta, v, act):
        a = v.view(-1, *shape)
        for layer, w, b, last in with_params(layers, theta):
            if layer[0] == "conv":
                a = act(F.conv2d(a, w, b, stride=layer[3], padding=layer[4]))
            else:
                a = F.linear(a.flatten(1), w, b)
                a = a if last else act(a)
        return a.squeeze(1)

    xv = torch.tensor(x, requires_grad=True)
    lv = torch.tensor(lam, requires_grad=True)
    yv = torch.tensor(y)
    vel = [torch.zeros_like(xv), torch.zeros_like(lv)]
    wants = [p.requires_grad_() for p in theta]

    def recon():
        phi = (lv * yv * f(wants, xv, ModifiedRelu.apply)).sum() / len(y)
        g = torch.autograd.grad(phi, wants, create_graph=True)
        loss = sum(((p.detach() - gp) ** 2).sum() for p, gp in zip(wants, g))
        loss = loss + (F.relu(xv - 1) ** 2).sum() + (F.relu(-1 - xv) ** 2).sum()
        loss = loss + 5 * (F.relu(LAMBDA_MIN - lv) ** 2).sum()
        gx, gl = torch.autograd.grad(loss, [xv, lv])
        with torch.no_grad():
            for v, p, gp, lr in ((vel[0], xv, gx, 0.1), (vel[1], lv, gl, 1e-4)):
                v.mul_(0.9).add_(gp)
                p.sub_(lr * v)

    txv, tyv = torch.tensor(tx), torch.tensor(ty)

    def train():
        loss = F.softplus(-tyv * f(wants, txv, torch.relu)).mean()
        grads = torch.autograd.grad(loss, wants)
        with torch.no_grad():
            for p, g in zip(wants, grads):
                p.sub_(0.01 * g)

    return recon, train


def jax_steps(layers, params, x, lam, y, tx, ty, shape):
    import jax
    import jax.numpy as jnp

    @jax.custom_jvp
    def mrelu(z):
        return jnp.maximum(z, 0)

    @mrelu.defjvp
    def mrelu_jvp(primals, tangents):
        (z,), (dz,) = primals, tangents
        return jnp.maximum(z, 0), jax.nn.sigmoid(ALPHA * z) * dz

    def f(theta, v, act):
        a = v.reshape(-1, *shape)
        for layer, w, b, last in with_params(layers, theta):
            if layer[0] == "conv":
                s, p = layer[3], layer[4]
                a = jax.lax.conv_general_dilated(a, w, (s, s), [(p, p), (p, p)])
                a = act(a if b is None else a + b[None, :, None, None])
            else:
                a = a.reshape(a.shape[0], -1) @ w.T
                a = a if b is None else a + b
                a = a if last else act(a)
        return a[:, 0]

    theta = [jnp.asarray(p) for p in params]

    def loss(xv, lv, yv):
        phi = lambda th: (lv * yv * f(th, xv, mrelu)).sum() / yv.shape[0]
        g = jax.grad(phi)(theta)
        kkt = sum(((p - gp) ** 2).sum() for p, gp in zip(theta, g))
        prior = (jax.nn.relu(xv - 1) ** 2).sum() + (jax.nn.relu(-1 - xv) ** 2).sum()
        return kkt + prior + 5 * (jax.nn.relu(LAMBDA_MIN - lv) ** 2).sum()

    @jax.jit
    def recon_step(xv, lv, vx, vl, yv):
        gx, gl = jax.grad(loss, argnums=(0, 1))(xv, lv, yv)
        vx, vl = 0.9 * vx + gx, 0.9 * vl + gl
        return xv - 0.1 * vx, lv - 1e-4 * vl, vx, vl

    @jax.jit
    def train_step(th, txv, tyv):
        g = jax.grad(lambda t: jax.nn.softplus(-tyv * f(t, txv, jax.nn.relu)).mean())(th)
        return [p - 0.01 * gp for p, gp in zip(th, g)]

    state = [jnp.asarray(x), jnp.asarray(lam), jnp.zeros_like(x), jnp.zeros_like(lam)]
    yv, txv, tyv = jnp.asarray(y), jnp.asarray(tx), jnp.asarray(ty)
    params_now = [theta]

    def recon():
        state[:] = recon_step(*state, yv)
        state[0].block_until_ready()

    def train():
        params_now[0] = train_step(params_now[0], txv, tyv)
        params_now[0][0].block_until_ready()

    return recon, train


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--framework", choices=["torch", "jax"], required=True)
    ap.add_argument("--arch", default="conv:32k3,conv:64k3s2,fc:1000")
    ap.add_argument("--input", default="1x28x28")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={a.threads}"
    c, h, w = (int(v) for v in a.input.split("x"))
    layers = parse_arch(a.arch)
    rng = np.random.default_rng(0)
    params, _ = init_params(layers, c, h, w, rng)
    m, n, d = 200, 100, c * h * w
    x = (1e-3 * rng.standard_normal((m, d))).astype(np.float32)
    lam = rng.uniform(0, 1, m).astype(np.float32)
    y = np.where(np.arange(m) < m // 2, -1.0, 1.0).astype(np.float32)
    tx = rng.uniform(-1, 1, (n, d)).astype(np.float32)
    ty = np.where(np.arange(n) < n // 2, -1.0, 1.0).astype(np.float32)
    if a.framework == "torch":
        import torch
        torch.set_num_threads(a.threads)
        recon, train = torch_steps(layers, params, x, lam, y, tx, ty, (c, h, w))
    else:
        recon, train = jax_steps(layers, params, x, lam, y, tx, ty, (c, h, w))
    print(json.dumps({
        "framework": a.framework, "case": a.arch, "input": a.input, "threads": a.threads,
        "recon_step_s": median_time(recon, a.steps), "train_step_s": median_time(train, a.steps),
    }))


if __name__ == "__main__":
    main()
