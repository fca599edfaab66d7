"""What every pre-training method gives the shared engine (:func:`gvsl.pretrain.pretrain`).

A method builds a network that holds the kit's :class:`~gvsl.nets.UNet3D` as ``.backbone`` plus its
own pretext head, draws its crops from the :class:`~gvsl.bank.VolumeBank`, turns them into the
network's inputs and targets (its augmentations), and turns the network's outputs into a
:class:`~gvsl.losses.LossTerms`. Everything else (optimiser, schedule, checkpoints, resume, DDP,
DVCLive, progress, non-finite losses, held-out evaluation) is the engine's, identical for all.

Per step every method's backbone sees ``2 × batch_size`` crops, as GVSL's ``batch_size`` pairs do:
single-crop methods draw ``2 × batch_size`` crops, pair and two-view methods ``batch_size`` of each.
All randomness comes from the engine's ``torch.Generator`` (checkpointed), so a resumed run draws
what an uninterrupted one would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from gvsl.bank import VolumeBank
from gvsl.errors import GVSLInputError
from gvsl.losses import LossTerms
from gvsl.methods.options import NoOptions
from gvsl.nets.unet import UNet3D
from gvsl.runtime import full_precision
from gvsl.settings import from_mapping

__all__ = ["SAMPLINGS", "Crops", "NetworkConfig", "NoOptions", "PretextNetwork", "PretrainMethod"]

#: how a method draws its crops per step
SAMPLINGS = ("single", "pairs", "views")


@dataclass
class Crops:
    """One step's crops, (N, C, D, H, W) each: ``first`` always; ``second`` for pairs (another subject at
    the same position) and views (an overlapping crop of the same volume); ``labels`` (N,) for
    methods whose crops come with pseudo-labels (DeepCluster)."""

    first: torch.Tensor
    second: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def to(self, device: torch.device) -> Crops:
        """The crops on ``device``, where the augmentations then run (labels stay where they are)."""
        return Crops(self.first.to(device), None if self.second is None else self.second.to(device), self.labels)

    def __len__(self) -> int:
        return self.first.shape[0]

    def __getitem__(self, index: slice) -> Crops:
        def take(t):
            return None if t is None else t[index]

        return Crops(self.first[index], take(self.second), take(self.labels))


@dataclass(frozen=True)
class NetworkConfig:
    """What rebuilds a baseline's pre-training network (stored in, and checked against, its checkpoints)."""

    method: str
    in_channels: int
    channels: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "in_channels": self.in_channels,
            "channels": list(self.channels),
            "options": dict(self.options),
        }


class PretextNetwork(nn.Module):
    """The backbone plus a baseline's head; ``forward`` returns a dict of named outputs for its loss."""

    def __init__(self, method: PretrainMethod, in_channels: int, channels: Sequence[int]):
        super().__init__()
        # The backbone is built first from the seeded global RNG: its initial weights are scratch's
        # of the same seed, so an encoder-only method leaves the decoder exactly at scratch's.
        self.backbone = UNet3D(in_channels, channels)
        self.config = NetworkConfig(method.key, in_channels, tuple(self.backbone.channels), method.options_dict())


class PretrainMethod(ABC):
    """A pre-training method: its network, its crops, its augmentations and its loss.

    Subclasses set the class attributes and implement :meth:`inputs` and :meth:`loss`; the module of each
    method cites the paper its head and loss follow.

    Attributes:
        key: the name in ``pipeline.methods``, ``gvsl pretrain --method`` and ``build/pretrain/<key>``.
        title: the row name in Table 1.
        Options: dataclass of the method's settings (``params.yaml`` → ``pretrain.options.<key>``), a
            :class:`~gvsl.methods.options.MethodOptions`.
        Network: the pre-training network, built by :meth:`build` as ``Network(method, in_channels, channels)``.
        sampling: one of :data:`SAMPLINGS`.
        uses_decoder: whether the loss reaches the U-Net decoder (DDP must otherwise allow unused parameters).
        registers: whether the network has a Z-matching head that :mod:`gvsl.pretext` can evaluate.
        comparable_heldout_loss: whether held-out losses of different iterations measure one task
            (not so for DeepCluster, whose targets change at each re-clustering).

    Every subclass's :meth:`loss` runs in fp32 whatever autocast region calls it
    (:func:`gvsl.runtime.full_precision`, applied here when the subclass is defined): its half-precision
    outputs arrive as fp32, and its logits, softmax, similarities and sums stay there.
    """

    key: ClassVar[str]
    title: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    Network: ClassVar[type[nn.Module]]
    sampling: ClassVar[str] = "single"
    uses_decoder: ClassVar[bool] = True
    registers: ClassVar[bool] = False
    comparable_heldout_loss: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "loss" in cls.__dict__ and not getattr(cls.loss, "__isabstractmethod__", False):
            cls.loss = full_precision(cls.loss)

    def __init__(self, options: Mapping[str, Any] | None = None):
        if options is not None and not isinstance(options, Mapping):
            raise GVSLInputError(f"pretrain.options.{self.key} must be a mapping of settings, got {options!r}")
        where = f"pretrain.options.{self.key}"
        try:
            self.options = from_mapping(self.Options, dict(options or {}), where)
        except GVSLInputError:
            raise  # it names the settings already
        except (TypeError, ValueError) as error:
            raise GVSLInputError(f"{where}: {error}") from None

    def options_dict(self) -> dict[str, Any]:
        return asdict(self.options)

    def check(self, crop: Sequence[int], batch_size: int) -> None:
        """Raise :class:`GVSLInputError` for settings this method cannot train with."""

    def build(self, in_channels: int, channels: Sequence[int]) -> nn.Module:
        """The pre-training network, with the backbone as ``.backbone`` and a ``.config.to_dict()``."""
        return self.Network(self, in_channels, channels)

    def sample(
        self, bank: VolumeBank, batch_size: int, crop: Sequence[int], generator: torch.Generator, jitter: int = 0
    ) -> Crops:
        """This step's crops (see the module docstring for their number)."""
        if self.sampling == "pairs":
            return Crops(*bank.sample_pairs(batch_size, crop, generator, jitter))
        if self.sampling == "views":
            return Crops(*bank.sample_views(batch_size, crop, generator, self.view_shift(crop)))
        return Crops(bank.sample_crops(2 * batch_size, crop, generator)[0])

    def view_shift(self, crop: Sequence[int]) -> int:
        """Largest offset, in voxels, between the two crops of a view pair."""
        raise NotImplementedError(f"{self.key} does not draw view pairs")

    def crops_per_step(self, batch_size: int) -> int:
        """How many ``first`` crops one step draws."""
        return 2 * batch_size if self.sampling == "single" else batch_size

    def heldout_crops(self, heldout: Any) -> Crops:
        """Crops of held-out subjects (:class:`gvsl.pretext.HeldOutPairs`) for the held-out loss: pair
        methods take the pairs; the others take each subject's crop once (as a view pair: twice, its
        two views differing by augmentation)."""
        if self.sampling == "pairs":
            return Crops(heldout.fixed, heldout.moving)
        first_of = {}
        for index, (fixed_id, _) in enumerate(heldout.ids):
            first_of.setdefault(fixed_id, index)
        subjects = heldout.fixed[list(first_of.values())]
        return Crops(subjects, subjects) if self.sampling == "views" else Crops(subjects)

    @abstractmethod
    def inputs(
        self, crops: Crops, generator: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The network's keyword inputs and the loss's targets (augmentation happens here)."""

    @abstractmethod
    def loss(self, outputs: Any, targets: Mapping[str, torch.Tensor]) -> LossTerms:
        """The loss of the network's outputs against the targets."""

    def before_step(
        self,
        model: nn.Module,
        iteration: int,
        bank: VolumeBank,
        crop: Sequence[int],
        generator: torch.Generator,
        optimizer: torch.optim.Optimizer,
        distributed: Any,
    ) -> None:
        """Called before the step of 0-based ``iteration`` (DeepCluster re-clusters here)."""

    def after_step(self, model: nn.Module, iteration: int, iterations: int) -> None:
        """Called after the optimiser step of 0-based ``iteration`` (BYOL moves its target here)."""
