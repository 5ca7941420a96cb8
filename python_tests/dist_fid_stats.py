"""Run by test_train_cli.py under torchrun (2 processes, gloo): digits FID statistics of the first 300 test
images, sharded across the ranks and all-reduced; rank 0 saves them."""
import sys

import torch

import hebm_ext as H
from hebm_ext import distributed as hdist, evaluate

info = hdist.init_from_env("cpu")
s = evaluate.data_stats(H.data.Digits(split="test"), 300, info, "digits")
if info.main:
    torch.save({"n": s.n, "mu": torch.as_tensor(s.mu), "sigma": torch.as_tensor(s.sigma)}, sys.argv[1])
hdist.shutdown()
