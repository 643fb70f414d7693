"""torchvision, imported once before a run needs it, so a broken install is one line instead of a traceback.

torchvision's compiled operators are built against one torch release. A torchvision from another build
(pip mixing the PyPI and the PyTorch indexes, or upgrading one of the two) cannot load them, and
`import torchvision` then dies with `RuntimeError: operator torchvision::nms does not exist`, some sixty
lines into Avalanche's imports. `import_torchvision` turns that into a `UserError` naming the fix.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from nlbench.errors import UserError

FIX = ("reinstall both from one index, e.g. pip install --force-reinstall torch torchvision "
       "--index-url https://download.pytorch.org/whl/cpu (or your CUDA index)")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def import_torchvision() -> Any:
    """`import torchvision`; a torch/torchvision pair that does not fit is a UserError (one line)."""
    try:
        import torchvision
    except RuntimeError as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "torchvision::" not in text or "does not exist" not in text:
            raise
        raise UserError(f"torchvision {_version('torchvision')} does not fit torch {_version('torch')} ({text}): "
                        f"they come from different builds; {FIX}") from None
    return torchvision
