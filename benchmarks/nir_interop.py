"""What the frameworks' own NIR readers do with a ttfs-plugin NIR file (docs/nir.md).

    python -m benchmarks.nir_interop [--epochs 30] [--steps 32,128,512]

For a random MLP, a CNN with max-pooling and one with avg-pooling, it writes the file with
``ttfs_plugin.nir.write`` and tries ``snntorch.import_nir.import_from_nir`` and
``norse.torch.from_nir`` on it: does it import, does one forward step run, what error. Then it
trains the digits MLP (``ttfs train``), and runs Norse's import of its file — with the Flatten
patch of docs/nir.md — as a rate-coded network (the image as a constant current for N steps,
logits = the output current summed over the steps) and prints how often its prediction agrees
with the exact TTFS simulation (``from_nir``) and its accuracy. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:90]}"


def readers():
    import norse.torch as nt
    from snntorch.import_nir import import_from_nir

    return {"snntorch.import_from_nir": import_from_nir, "norse.torch.from_nir": nt.from_nir}


def flatten_patch(net: nn.Module) -> None:
    """docs/nir.md's patch: NIR's Flatten counts dimensions without the batch."""
    for module in net.modules():
        if isinstance(module, nn.Flatten) and module.start_dim == 0:
            module.start_dim = 1


def try_readers(folder: Path) -> list[str]:
    import nir

    from ttfs_plugin import nir as tnir
    from ttfs_plugin.models import mlp, small_cnn

    models = {"MLP (1×8×8)": (mlp(hidden=(32,), T=8), (2, 1, 8, 8)),
              "CNN, max-pool": (small_cnn(channels=(2, 4), hidden=8, T=8), (2, 1, 28, 28)),
              "CNN, avg-pool": (small_cnn(channels=(2, 4), hidden=8, T=8, pool="avg"),
                                (2, 1, 28, 28))}
    rows = ["| network | reader | imports | one step runs |", "|---|---|---|---|"]
    for label, (model, shape) in models.items():
        path = folder / "net.nir"
        tnir.write(model.eval(), path)
        for reader, load in readers().items():
            try:
                net = load(nir.read(path))
                imported = "yes"
            except Exception as exc:  # the point is to report what happens
                rows.append(f"| {label} | `{reader}` | no — {_short(exc)} | — |")
                continue
            try:
                out = net(torch.rand(*shape))
                ran = "yes" if not isinstance(out, tuple) or torch.is_tensor(out[0]) else "?"
            except Exception as exc:
                ran = f"no — {_short(exc)}"
            rows.append(f"| {label} | `{reader}` | {imported} | {ran} |")
    return rows


def rate_coded_agreement(folder: Path, epochs: int, step_counts: list[int]) -> list[str]:
    import nir
    import norse.torch as nt

    from ttfs_plugin import nir as tnir
    from ttfs_plugin import norse as tnorse
    from ttfs_plugin.checkpoint import load_checkpoint
    from ttfs_plugin.cli import main
    from ttfs_plugin.data import load_dataset
    from ttfs_plugin.training.trainer import batches

    run = folder / "digits"
    assert main(["train", "--epochs", str(epochs), "--out", str(run), "--quiet"]) == 0
    model, _ = load_checkpoint(run / "checkpoint.pt")
    path = tnir.write(model, folder / "digits.nir")
    x, y = next(iter(batches(load_dataset("digits", None).split("val"), 10_000)))
    exact = tnorse.simulate(tnir.from_nir(path, "norse"), x).logits.argmax(1)
    net = nt.from_nir(nir.read(path))
    flatten_patch(net)
    rows = [f"Digits MLP after {epochs} epochs, {len(y)} validation images; exact TTFS "
            f"simulation (`from_nir`): accuracy {100 * (exact == y).double().mean():.2f} %.", "",
            "| steps of constant input | agreement with the exact TTFS prediction | accuracy |",
            "|---|---|---|"]
    for steps in step_counts:
        state, total = None, 0
        with torch.no_grad():
            for _ in range(steps):
                out, state = net(x, state)
                total = total + out
        pred = total.argmax(1)
        rows.append(f"| {steps} | {100 * (pred == exact).double().mean():.2f} % | "
                    f"{100 * (pred == y).double().mean():.2f} % |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nir_interop",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="digits MLP training epochs")
    parser.add_argument("--steps", default="32,128,512",
                        help="comma-separated step counts of the rate-coded reading")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)  # Norse's reader logs a warning per odd parameter
    import nir
    import norse
    import snntorch

    print(f"nir {nir.version}, snnTorch {snntorch.__version__}, Norse {norse.__version__}\n")
    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(try_readers(Path(tmp))), "\n")
        steps = [int(s) for s in args.steps.split(",")]
        print("\n".join(rate_coded_agreement(Path(tmp), args.epochs, steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
