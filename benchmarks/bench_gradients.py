"""How strongly each loss term trains the backbone: gradient norms per term during pre-training.

At fixed checkpoints of one pre-training run (iteration 0, 100 and 500 by default) the backbone's
gradient is taken from each term of L = L_NCC + L_smooth + L_MSE separately, on a fixed set of
training views (seeded, the same at every checkpoint), and its L2 norm over all backbone parameters
is reported with each term's share of the summed norms and the cosine between the NCC and MSE
gradients. A Z-matching head that starts at the identity sends almost no gradient to the backbone
at first; this shows whether, and how fast, that changes.

The run is ``gvsl.pretrain.pretrain`` itself, continued from one checkpoint to the next (``resume``),
so the numbers describe the engine's training, not a copy of it. The learning rate is constant
(resuming at another length would change a decaying schedule).

    python benchmarks/bench_gradients.py --data build/prepared/pretrain           # default widths, 32³
    python benchmarks/bench_gradients.py --data build/prepared/pretrain --lr 1e-3 --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from gvsl.checkpoint import PRETRAIN_STATE_FORMAT, load_pretrained_gvsl
from gvsl.data import load_prepared
from gvsl.losses import GVSLLoss
from gvsl.nets import GVSL
from gvsl.pretrain import PretrainConfig, VolumeBank, pretrain
from gvsl.views import AppearanceTransform, RandSpatialTransform, make_views


def fixed_views(bank: VolumeBank, config: PretrainConfig, batches: int, seed: int):
    """``batches`` training batches drawn as the engine draws them, from a generator of their own."""
    generator = torch.Generator().manual_seed(seed)
    appearance, spatial = AppearanceTransform(**config.appearance), RandSpatialTransform(**config.spatial)
    return [
        make_views(*bank.sample_pairs(config.batch_size, config.crop, generator), appearance, spatial, generator)
        for _ in range(batches)
    ]


def gradient_norms(checkpoint: Path, views) -> dict[str, float]:
    """Backbone gradient norm of each loss term, summed over the fixed batches (then the norm)."""
    model = load_pretrained_gvsl(checkpoint)
    criterion = GVSLLoss()
    parameters = list(model.backbone.parameters())
    totals: dict[str, list[torch.Tensor]] = {}
    for batch in views:
        terms = criterion(model(batch.view_a, batch.image_b), batch.target_a)
        for name, term in terms.parts.items():
            if not term.requires_grad:
                continue
            grads = torch.autograd.grad(term, parameters, retain_graph=True, allow_unused=True)
            flat = torch.cat(
                [torch.zeros_like(p).flatten() if g is None else g.flatten() for g, p in zip(grads, parameters)]
            )
            totals.setdefault(name, []).append(flat / len(views))
    flat = {name: torch.stack(parts).sum(0) for name, parts in totals.items()}
    norms = {f"{name}_norm": float(g.norm()) for name, g in flat.items()}
    summed = sum(norms.values())
    norms.update({f"{name}_share": float(flat[name].norm()) / summed for name in flat})
    if "ncc" in flat and "mse" in flat:
        norms["cosine_ncc_mse"] = float(torch.nn.functional.cosine_similarity(flat["ncc"], flat["mse"], dim=0))
    return norms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared pre-training dataset (gvsl prepare)")
    parser.add_argument("--variant", default="gvsl")
    parser.add_argument("--at", type=int, nargs="+", default=[0, 100, 500], help="iterations to measure at")
    parser.add_argument("--channels", default="8,16,32,64,128,64,32,16,8")
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4, help="constant Adam learning rate (paper 1e-4)")
    parser.add_argument("--batches", type=int, default=4, help="fixed batches the gradients are summed over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = parser.parse_args()
    if sorted(args.at) != args.at or args.at[0] < 0:
        parser.error(f"--at must be increasing iterations >= 0, got {args.at}")

    cases = load_prepared(args.data).load_split("train")
    bank = VolumeBank([c.image for c in cases], [c.id for c in cases])
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for index, iteration in enumerate(args.at):
            config = PretrainConfig(
                variant=args.variant,
                iterations=max(iteration, 1),
                batch_size=2,
                crop=(args.crop,) * 3,
                channels=tuple(int(c) for c in args.channels.split(",")),
                lr=args.lr,
                seed=args.seed,
                checkpoint_every=max(iteration, 1),
                device="cpu",
            )
            if index == 0:
                views = fixed_views(bank, config, args.batches, seed=10_000 + args.seed)
            if iteration == 0:
                # iteration 0 is the model pretrain() starts from (same seed, same constructor)
                torch.manual_seed(config.seed)
                model = GVSL.variant(config.variant, channels=config.channels)
                state = {
                    "format": PRETRAIN_STATE_FORMAT,
                    "model_config": model.config.to_dict(),
                    "model": model.state_dict(),
                }
                norms = gradient_norms(state, views)
            else:
                pretrain(bank, out, config, resume=True, progress=False)
                norms = gradient_norms(Path(out) / "checkpoint.pt", views)
            rows.append({"iteration": iteration, **norms})
            print(f"iteration {iteration:5d}: " + "  ".join(f"{k} {v:.3g}" for k, v in norms.items()), flush=True)
    if args.json:
        print(
            json.dumps(
                {"variant": args.variant, "lr": args.lr, "channels": args.channels, "crop": args.crop, "rows": rows}
            )
        )


if __name__ == "__main__":
    main()
