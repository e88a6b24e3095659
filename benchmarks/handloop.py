"""(a) The hand-written PyTorch loop: what a user writes without any framework.

    python benchmarks/handloop.py --workload '<json>' [--device cuda] [--prefetch] [--compile]

Same network, data, batch size, epochs, optimizer (AdamW), cosine schedule and seed as
``train.py``; validates every epoch and tests at the end. Per-position outputs (the language
model's ``(batch, time, vocab)``) are one prediction per position, as expkit's modules count them. ``--prefetch`` builds every epoch's
batches (on the device) before timing it: step time without data loading.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` from any cwd

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from benchmarks.clock import StepClock  # noqa: E402
from benchmarks.workloads import WEIGHT_DECAY, Workload, arrays, build_net, num_outputs  # noqa: E402


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``(..., classes)`` logits against ``(...)`` labels, every position one prediction."""
    return F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction=reduction)


def evaluate(net, loader, device, autocast) -> tuple[float, float]:
    net.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    with torch.no_grad(), autocast():
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = net(x)
            loss_sum += cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(-1) == y).sum()
            n += y.numel()
    net.train()
    return loss_sum.item() / n, correct.item() / n


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workload", required=True, help="a Workload as JSON")
    p.add_argument("--device", default="cpu")
    p.add_argument("--prefetch", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()
    w = Workload(**json.loads(args.workload))
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    torch.manual_seed(w.seed)
    splits = arrays(w)
    data = {s: TensorDataset(torch.as_tensor(x), torch.as_tensor(y)) for s, (x, y) in splits.items()}
    net = build_net(w, tuple(splits["train"][0].shape[1:]), num_outputs(w)).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    step_net = torch.compile(net) if args.compile else net
    optimizer = torch.optim.AdamW(net.parameters(), lr=w.lr, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=w.epochs)
    val_loader = DataLoader(data["val"], batch_size=w.batch_size)
    clock = StepClock()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for epoch in range(w.epochs):
        order = torch.randperm(len(data["train"]), generator=torch.Generator().manual_seed(w.seed + epoch))
        batches = DataLoader(data["train"], batch_size=w.batch_size, sampler=order.tolist(), pin_memory=cuda)
        if args.prefetch:  # outside the timed steps
            batches = [(x.to(device, memory_format=memory_format) if x.dim() == 4 else x.to(device), y.to(device))
                       for x, y in batches]
        for x, y in batches:
            clock.start()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast():
                loss = cross_entropy(step_net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clock.end(epoch)
        if cuda:
            torch.cuda.synchronize()
        scheduler.step()
        val_loss, val_acc = evaluate(net, val_loader, device, autocast)
    test_loss, test_acc = evaluate(net, DataLoader(data["test"], batch_size=w.batch_size), device, autocast)
    clock.extra.update(batch_size=w.batch_size, val_acc=val_acc, test_acc=test_acc, finished_at=time.time())
    if cuda:
        clock.extra["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device)
    clock.write()


if __name__ == "__main__":
    main()
