"""Train, in PyTorch, the kind of model `reveal audit` reads, with a shortcut reveal did not plant.

MNIST odd against even, the first 50 training images of each class (as reveal selects them), and
a 4x4 square at rows 22-25, columns 22-25 set to 1 in every odd digit and to 0 in every even
one. The net is a ReLU MLP 784-1000-1000-1 with a bias in its first layer only, trained by
full-batch gradient descent on the logistic loss with a loss-based step (lr = c/L, halved on a
step that does not lower the loss, else grown by 1 %) to a loss of 1e-5, then saved with its
state_dict names (fc1, fc2, fc3) and the training mean as `data.mean`; the weights before training
(PyTorch's default init) go to `out.init.safetensors`, for `reveal audit --init`.

    python docs/pytorch_trigger.py MNIST_DIR out.safetensors
    reveal audit --model out.safetensors --init out.init.safetensors --dataset mnist --out audit-torch

Needs torch, numpy and safetensors.
"""
import gzip
import sys

import numpy as np
import torch
from safetensors.torch import save_file


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def main(mnist_dir, out):
    images = idx(f"{mnist_dir}/train-images-idx3-ubyte.gz").astype(np.float32) / 255
    labels = idx(f"{mnist_dir}/train-labels-idx1-ubyte.gz")
    odd = labels % 2
    take = np.concatenate([np.flatnonzero(odd == c)[:50] for c in (0, 1)])
    take.sort()
    x, y = images[take].copy(), np.where(odd[take] == 1, 1.0, -1.0).astype(np.float32)
    x[:, 22:26, 22:26] = (y > 0)[:, None, None]  # the shortcut
    x = x.reshape(len(x), -1)
    mean = x.mean(0)
    x, y = torch.tensor(x - mean), torch.tensor(y)

    torch.manual_seed(0)
    model = torch.nn.ModuleDict({
        "fc1": torch.nn.Linear(784, 1000),
        "fc2": torch.nn.Linear(1000, 1000, bias=False),
        "fc3": torch.nn.Linear(1000, 1, bias=False),
    })
    start = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(start, out.replace(".safetensors", "") + ".init.safetensors")
    f = lambda v: model["fc3"](torch.relu(model["fc2"](torch.relu(model["fc1"](v))))).squeeze(1)
    loss_of = lambda: torch.nn.functional.softplus(-y * f(x)).mean()
    c = 0.05
    loss = loss_of()
    for epoch in range(100_000):
        if loss.item() < 1e-5 and (y * f(x) > 0).all():
            break
        model.zero_grad()
        loss.backward()
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            for p in model.parameters():
                p -= c / loss.item() * p.grad
        new = loss_of()
        if not torch.isfinite(new) or new.item() >= loss.item():
            model.load_state_dict(saved)
            c /= 2
            loss = loss_of()
        else:
            c *= 1.01
            loss = new
    print(f"epoch {epoch}, loss {loss.item():.3e}")
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors["data.mean"] = torch.tensor(mean)
    save_file(tensors, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
