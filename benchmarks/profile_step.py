"""Where one training step's time goes: torch.profiler's op table and flowcore.bench's breakdown.

    python benchmarks/profile_step.py lsd --variant flowcore --net small --batch 1024 [--rows 25]

--variant flowcore | reference | torch_compile | …; --net any of flowcore bench's (unet-digits, unet-cifar too);
the step is warmed up first (--warmup, default 3).
"""
import argparse
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from flowcore.bench.config import NETS, VARIANTS
from flowcore.bench.measure import breakdown
from flowcore.bench.steps import training_step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("objective")
    parser.add_argument("--variant", choices=VARIANTS, default="flowcore")
    parser.add_argument("--net", choices=list(NETS), default="small")
    parser.add_argument("--batch", type=int, help="default: the net's first default batch")
    parser.add_argument("--data-path", help="the files of a net whose data is read from disk (unet-cifar: CIFAR-10)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--backend", help="flowcore's backend or torch.compile's (default: by device / inductor)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    step = training_step(args.objective, args.variant, args.net, args.batch, args.device, backend=args.backend,
                         data_path=args.data_path)
    for _ in range(max(args.warmup, 1)):
        step()
    split = breakdown(step, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.rows))
    wall = split["wall_ms"]
    print(f"{args.objective} {args.variant} net {args.net} batch {args.batch or NETS[args.net].batches[0]} on {args.device}: profiled step "
          f"{wall:.1f} ms = GEMM {split['gemm_ms']:.1f} + fused {split['fused_ms']:.1f} + other ops "
          f"{split['other_ms']:.1f} + overhead {split['overhead_ms']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
