"""The CNN `reveal train --arch conv:32k3,conv:64k3s2,fc:1000` trains, in PyTorch: both ways.

MNIST odd against even, the first 50 training images of each class (as reveal selects them), the
test set the first 500 of each class of the test split, pixels in [0, 1] minus the training mean.
The net: Conv2d(1, 32, 3) -> ReLU -> Conv2d(32, 64, 3, stride 2) -> ReLU -> flatten -> Linear(9216,
1000) -> ReLU -> Linear(1000, 1), a bias in the first layer only, held in a ModuleList called
`layers` so its state_dict names are reveal's (`layers.0.weight` [32, 1, 3, 3], ...).

    python docs/pytorch_cnn.py check MNIST_DIR model.safetensors
        reads a model reveal trained with load_state_dict and prints its test accuracy beside the
        one reveal wrote in the file's metadata (they agree to float rounding);
    python docs/pytorch_cnn.py train MNIST_DIR out.safetensors [--trigger]
        trains the same CNN here, from reveal's init (first layer N(0, 1)*1e-4, later layers
        PyTorch's default), by full-batch gradient descent on the logistic loss with the
        loss-based step (lr = c/L; a step that does not lower the loss is undone and c halved,
        else c grows by 1 %) to a loss of 1e-5, and saves it with `data.mean`. With --trigger a
        3x3 square in the top-left corner is 1 in every odd digit and 0 in every even one: then

    reveal audit --model out.safetensors --arch conv:32k3,conv:64k3s2,fc:1000 --dataset mnist --out audit-cnn

Needs torch, numpy and safetensors.
"""
import json
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pytorch_trigger import idx  # the MNIST IDX reader, beside this script


def first_per_class(mnist_dir, split, per_class):
    images = idx(f"{mnist_dir}/{split}-images-idx3-ubyte.gz").astype(np.float32) / 255
    odd = idx(f"{mnist_dir}/{split}-labels-idx1-ubyte.gz") % 2
    take = np.sort(np.concatenate([np.flatnonzero(odd == c)[:per_class] for c in (0, 1)]))
    return images[take].copy(), np.where(odd[take] == 1, 1.0, -1.0).astype(np.float32)


def network():
    return torch.nn.ModuleDict({"layers": torch.nn.ModuleList([
        torch.nn.Conv2d(1, 32, 3),
        torch.nn.Conv2d(32, 64, 3, stride=2, bias=False),
        torch.nn.Linear(9216, 1000, bias=False),
        torch.nn.Linear(1000, 1, bias=False),
    ])})


def forward(net, x):
    c1, c2, fc1, fc2 = net["layers"]
    a = torch.relu(c2(torch.relu(c1(x.view(-1, 1, 28, 28)))))
    return fc2(torch.relu(fc1(a.flatten(1)))).squeeze(1)


def accuracy(net, x, y):
    with torch.no_grad():
        return ((forward(net, x) > 0) == (y > 0)).float().mean().item()


def check(mnist_dir, path):
    with safe_open(path, "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    mean = state.pop("data.mean").numpy()
    net = network()
    net.load_state_dict(state)
    x, y = first_per_class(mnist_dir, "t10k", 500)
    x = torch.tensor(x.reshape(len(x), -1) - mean)
    ours = json.loads(meta["train"])["test_accuracy"]
    print(f"test accuracy in PyTorch {accuracy(net, x, torch.tensor(y)):.4f}, reveal's {ours:.4f}")


def train(mnist_dir, out, trigger):
    x, y = first_per_class(mnist_dir, "train", 50)
    if trigger:
        x[:, 0:3, 0:3] = (y > 0)[:, None, None]
    x = x.reshape(len(x), -1)
    mean = x.mean(0)
    x, y = torch.tensor(x - mean), torch.tensor(y)
    torch.manual_seed(0)
    net = network()
    with torch.no_grad():
        net["layers"][0].weight.normal_().mul_(1e-4)
        net["layers"][0].bias.normal_().mul_(1e-4)
    loss_of = lambda: torch.nn.functional.softplus(-y * forward(net, x)).mean()
    c, loss = 0.05, loss_of()
    for epoch in range(100_000):
        if loss.item() < 1e-5 and (y * forward(net, x) > 0).all():
            break
        net.zero_grad()
        loss.backward()
        saved = {k: v.detach().clone() for k, v in net.state_dict().items()}
        with torch.no_grad():
            for p in net.parameters():
                p -= c / loss.item() * p.grad
        new = loss_of()
        if not torch.isfinite(new) or new.item() >= loss.item():
            net.load_state_dict(saved)
            c, loss = c / 2, loss_of()
        else:
            c, loss = c * 1.01, new
    tx, ty = first_per_class(mnist_dir, "t10k", 500)
    tx = torch.tensor(tx.reshape(len(tx), -1) - mean)
    print(f"epoch {epoch}, loss {loss.item():.3e}, test accuracy {accuracy(net, tx, torch.tensor(ty)):.4f}")
    tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    tensors["data.mean"] = torch.tensor(mean)
    save_file(tensors, out)


if __name__ == "__main__":
    if sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    else:
        train(sys.argv[2], sys.argv[3], "--trigger" in sys.argv)
