"""Device names: `check_device` reads the syntax without torch (so bad input is answered at once);
`resolve_device` asks torch what is there ("auto" -> cuda when a GPU is visible, else cpu)."""

from __future__ import annotations

import re
from typing import Any

from nlbench.errors import UserError

_DEVICE = re.compile(r"^(auto|cpu|cuda)(:\d+)?$")


def check_device(name: str) -> None:
    """UserError for anything that is not auto, cpu, cuda or cuda:N (torch is not imported)."""
    match = _DEVICE.match(name)
    if match is None or (match.group(2) and match.group(1) != "cuda"):
        raise UserError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")


def resolve_device(name: str) -> Any:
    """The torch.device for `name`; UserError when it asks for a GPU that is not visible."""
    check_device(name)
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} was asked for but no CUDA GPU is visible; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    return device
