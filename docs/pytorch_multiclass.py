"""Loads a C-class model written by `reveal train --task all` into PyTorch and checks its test
accuracy against the one reveal printed. The model is a plain nn.Sequential of Linear layers
(bias in the first only) and ReLUs; reveal's file is a PyTorch state dict as is.

    python docs/pytorch_multiclass.py mnist10.safetensors $REVEAL_DATA/mnist
"""
import gzip
import sys

import numpy as np
import torch
from safetensors.torch import load_file

state = load_file(sys.argv[1])
mean = state.pop("data.mean").reshape(-1)  # the training mean reveal subtracted
shapes = [state[f"layers.{i}.weight"].shape for i in range(3)]
net = torch.nn.Sequential(
    torch.nn.Linear(shapes[0][1], shapes[0][0]),              # layers.0: bias
    torch.nn.ReLU(),
    torch.nn.Linear(shapes[1][1], shapes[1][0], bias=False),  # layers.1
    torch.nn.ReLU(),
    torch.nn.Linear(shapes[2][1], shapes[2][0], bias=False),  # layers.2: one output per class
)
# nn.Sequential numbers its modules 0..4; reveal's layers.0/1/2 are modules 0, 2 and 4.
net.load_state_dict({
    "0.weight": state["layers.0.weight"], "0.bias": state["layers.0.bias"],
    "2.weight": state["layers.1.weight"], "4.weight": state["layers.2.weight"],
})

def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)

images = idx(f"{sys.argv[2]}/t10k-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
labels = idx(f"{sys.argv[2]}/t10k-labels-idx1-ubyte.gz")
# reveal's test split of --task all: the first 500 of each class, in file order.
keep, taken = [], [0] * 10
for i, l in enumerate(labels):
    if taken[l] < 500:
        keep.append(i)
        taken[l] += 1
x = torch.tensor(images[keep], dtype=torch.float32) - mean
with torch.no_grad():
    predicted = net(x).argmax(dim=1).numpy()
print(f"test accuracy {np.mean(predicted == labels[keep]):.4f} on {len(keep)} images")
