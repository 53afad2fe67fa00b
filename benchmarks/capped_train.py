"""`recipes/train.py` with this process held to a GPU memory cap; prints the peak allocation at exit.

    accelerate launch --config_file recipes/accelerate/single.yaml benchmarks/capped_train.py --cap-gib 24 \\
        --config recipes/socioreasoner_3b_24gb_lora.yaml [any train.py flag]

The cap is `torch.cuda.set_per_process_memory_fraction(cap / card)`: an allocation past it raises CUDA OOM as a
24 GB card would (the CUDA context, outside PyTorch's allocator, is not counted: nvidia-smi shows it).
Used by `benchmarks/gpu_checks.sh ... 24gb`.
"""

import atexit
import runpy
import sys
from pathlib import Path

import torch

TRAIN = str(Path(__file__).resolve().parents[1] / "recipes/train.py")


def main() -> None:
    args = sys.argv[1:]
    if "--cap-gib" not in args:
        raise SystemExit("error: --cap-gib GIB is required (the memory cap of this process)")
    at = args.index("--cap-gib")
    cap = float(args[at + 1])
    del args[at:at + 2]
    if not torch.cuda.is_available():
        raise SystemExit("error: capped_train needs a CUDA GPU")
    card = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap * 2**30 / card))
    atexit.register(lambda: print(f"capped_train: peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB "
                                  f"allocated (torch.cuda.max_memory_allocated), cap {cap:g} GiB of "
                                  f"{card / 2**30:.1f} GiB", flush=True))
    sys.argv = [TRAIN, *args]
    runpy.run_path(TRAIN, run_name="__main__")


if __name__ == "__main__":
    main()
