"""Where a run trains: the `device` setting ("auto" | "cpu" | "cuda") resolved on this machine.

    placement = resolve_device("auto", backend="auto")
    placement.device        torch.device("cuda", 0) or torch.device("cpu")
    placement.why           "torch and CuPy see NVIDIA H100 ...", "torch sees no GPU (...)", ...

"auto" takes the GPU when torch and CuPy both see one (the sparse heads' kernels are CuPy's, the
rest of the model torch's) and the kernel backend is not pinned to "cpu"; "cuda" insists and is a
DeviceError, naming what is missing, on a machine where it cannot run. The model's weights, its
checkpoints and the records do not depend on the device: a run started on one resumes on the other.
"""

from typing import NamedTuple

import torch

from .config import DEVICES
from .errors import ConfigError, DeviceError


class Placement(NamedTuple):
    """The device a run trains on and the reason it was chosen."""
    device: torch.device
    why: str


def gpu_status():
    """(True, what the GPU is) when torch and CuPy both see a GPU, else (False, why not)."""
    if not torch.cuda.is_available():
        return False, f"torch sees no GPU (torch {torch.__version__}, CUDA {torch.version.cuda or 'none'})"
    from .heads import cuda
    ok, why = cuda.available()
    if not ok:
        return False, f"torch sees a GPU but the sparse kernels cannot use it: {why}"
    return True, f"torch and CuPy see {torch.cuda.get_device_name()} ({why})"


def resolve_device(setting, backend="auto", index=None):
    """The Placement of a run whose config says device=`setting` and backend=`backend`; `index`:
    which GPU (a rank's local index; default torch's current device)."""
    if setting not in DEVICES:
        raise ConfigError(f"device={setting!r}: expected one of {', '.join(DEVICES)}")
    if setting == "cpu":
        return Placement(torch.device("cpu"), "device='cpu' was asked")
    if backend == "cpu":                                   # (device='cuda' with it: TrainConfig refuses)
        return Placement(torch.device("cpu"), "backend='cpu' was asked: its kernels run on the CPU")
    ok, why = gpu_status()
    if not ok:
        if setting == "cuda":
            raise DeviceError(f"device='cuda' cannot run on this machine: {why}; use --device cpu or auto")
        return Placement(torch.device("cpu"), why)
    index = torch.cuda.current_device() if index is None else index
    return Placement(torch.device("cuda", index), why)
