"""What inserting STA costs: forward time in ResNeXt-101, and how far a fresh module moves a trained net's predictions.

Run from the repository root: ``python -m benchmarks.sta_overhead [--repeats 9] [--threads N] [--device cpu|cuda]``.

1. Time: ResNeXt-101 with and without STA (default placement: every ``layer4`` block), 16 frames, 112², batch 2,
   eval mode, ``no_grad``; the two models run alternately (the order swapped every repetition) and the median of
   the per-repetition ratios is printed (goal: ≤ 1.03), with the time of the STA modules alone, which other load
   on the machine blurs far less than a whole-network ratio.
2. Agreement: a tiny_resnet is trained briefly on random-but-learnable clips (noisy class templates, 16×32²); STA is
   then inserted with each initialisation and the top-1 agreement with the plain network's predictions is printed.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mars_sta import attention_modules, build_model, load_pretrained


def _seconds(model: torch.nn.Module, clip: torch.Tensor) -> float:
    if clip.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(clip)
    if clip.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def time_ratio(repeats: int, device: str) -> None:
    torch.manual_seed(0)
    base = build_model("resnext101", num_classes=51).eval().to(device)
    with_sta = build_model("resnext101", num_classes=51, sta="layer4").eval().to(device)
    load_pretrained(with_sta, base.state_dict())
    clip = torch.randn(2, 3, 16, 112, 112, device=device)
    for model in (base, with_sta):  # warm-up
        _seconds(model, clip)
    base_times, sta_times, ratios = [], [], []
    for repeat in range(repeats):
        pair = (base, with_sta) if repeat % 2 == 0 else (with_sta, base)
        times = {id(model): _seconds(model, clip) for model in pair}
        base_times.append(times[id(base)])
        sta_times.append(times[id(with_sta)])
        ratios.append(times[id(with_sta)] / times[id(base)])
    print(f"ResNeXt-101, 16×112², batch 2, eval, no_grad, {device}, {torch.get_num_threads()} CPU threads, "
          f"{repeats} interleaved repetitions")
    print(f"  median forward: base {statistics.median(base_times) * 1e3:.1f} ms, "
          f"STA layer4 {statistics.median(sta_times) * 1e3:.1f} ms")
    print(f"  median ratio STA / base: {statistics.median(ratios):.3f}  (goal ≤ 1.03)")
    alone = _modules_alone(with_sta, clip)
    print(f"  the STA modules alone: {alone * 1e3:.3f} ms per forward, "
          f"= {alone / statistics.median(base_times):.2%} of the base forward (what STA itself adds)")


@torch.no_grad()
def _modules_alone(model: torch.nn.Module, clip: torch.Tensor, calls: int = 200) -> float:
    """Seconds the attention modules take per forward pass, timed on their recorded inputs."""
    inputs: dict[str, torch.Tensor] = {}
    modules = dict(attention_modules(model))
    hooks = [module.register_forward_pre_hook(lambda _m, args, name=name: inputs.__setitem__(name, args[0]))
             for name, module in modules.items()]
    model(clip)
    for hook in hooks:
        hook.remove()
    total = 0.0
    for name, module in modules.items():
        total += statistics.median(_seconds(module, inputs[name]) for _ in range(calls))
    return total


def agreement() -> None:
    classes, size, frames = 8, 32, 16
    torch.manual_seed(0)
    templates = F.interpolate(torch.randn(classes, 3, 4, 4, 4), size=(frames, size, size), mode="trilinear")

    def clips(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, classes, (count,), generator=generator)
        noise = torch.randn(count, 3, frames, size, size, generator=generator)
        return 0.1 * templates[labels] + noise, labels

    kwargs = {"num_classes": classes, "sample_size": size, "sample_duration": frames}
    torch.set_num_threads(1)  # small tensors: avoids OpenMP spin contention on a busy machine
    trained = build_model("tiny_resnet", **kwargs)
    optimizer = torch.optim.AdamW(trained.parameters(), lr=3e-3)
    for step in range(60):
        batch, labels = clips(16, step)
        loss = F.cross_entropy(trained(batch), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test, labels = clips(512, 10_000)
    with torch.no_grad():
        reference = trained.eval()(test).argmax(1)
    print(f"tiny_resnet trained 60 steps on noisy templates: top-1 {(reference == labels).float().mean():.1%} "
          f"on {len(labels)} held-out clips")
    print(f"  {'STA placement':<24}{'init=identity':>15}{'init=default':>14}")
    for stages in (["layer3"], ["layer2", "layer3"], ["layer1", "layer2", "layer3"]):
        row = []
        for init in ("identity", "default"):
            spec = ",".join(f"{stage}:init={init}" for stage in stages)
            torch.manual_seed(1)
            model = build_model("tiny_resnet", sta=spec, **kwargs)
            load_pretrained(model, trained.state_dict())
            with torch.no_grad():
                row.append((model.eval()(test).argmax(1) == reference).float().mean().item())
        print(f"  {'+'.join(stages):<24}{row[0]:>15.1%}{row[1]:>14.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="intra-op CPU threads (default: torch's choice)")
    parser.add_argument("--skip-agreement", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    time_ratio(args.repeats, args.device)
    if not args.skip_agreement:
        agreement()


if __name__ == "__main__":
    main()
