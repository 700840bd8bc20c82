"""Which devices a run uses, from val.py's --device string."""
from __future__ import annotations

import torch

from detval.errors import DetvalError


def parse_devices(spec: str) -> list[torch.device]:
    """'' -> cuda:0 if there is a GPU else cpu; 'cpu' -> cpu; '0' -> cuda:0; '0,1,2,3' -> four CUDA devices;
    '0,0' -> two ranks sharing GPU 0 (their process group is gloo, see distributed/launch.py)."""
    spec = spec.strip().lower().replace("cuda:", "")
    if spec == "cpu" or (spec == "" and not torch.cuda.is_available()):
        return [torch.device("cpu")]
    if spec == "":
        return [torch.device("cuda", 0)]
    try:
        ids = [int(s) for s in spec.split(",") if s.strip() != ""]
    except ValueError:
        raise DetvalError(f"--device {spec!r}: expected 'cpu', or CUDA indices such as 0 or 0,1,2,3") from None
    available = torch.cuda.device_count()
    bad = [i for i in ids if i >= available]
    if bad:
        raise DetvalError(f"--device {spec!r}: CUDA device {bad[0]} requested, {available} available")
    return [torch.device("cuda", i) for i in ids]
