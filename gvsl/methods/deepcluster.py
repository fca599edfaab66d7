"""DeepCluster (Caron et al., "Deep Clustering for Unsupervised Learning of Visual Features",
ECCV 2018): k-means on the pooled features gives pseudo-labels, a classifier learns them, and
the data are re-clustered every ``recluster_every`` iterations.

Each clustering draws ``crop_set`` crops of the training volumes (uniform volumes and positions),
embeds them by the current encoder (f^g pooled to 2³ cells, :func:`gvsl.methods.pretext_heads.layout`),
centres and L2-normalises the embeddings, and clusters them into ``clusters`` groups with
scikit-learn's k-means. The classifier's top layer is re-initialised and
its optimiser state dropped, as DeepCluster does. Until the next clustering, each step draws its
crops by picking a cluster uniformly and then one of its members (DeepCluster's remedy for
clusters of very different sizes), flips them as Models Genesis does, and minimises the cross-entropy against
the cluster labels. The crop set, labels and centroids are buffers of the network, so they are
checkpointed and a resumed run continues with the same clusters. Held-out crops are labelled by
their nearest centroid. Only the encoder is trained.

Deviations: the embeddings are centred but not PCA-whitened before k-means (centring removes the
component all crops share, which otherwise makes them nearly parallel); crops of one training set
instead of whole images; a linear top layer instead of DeepCluster's fully connected stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gvsl.bank import VolumeBank
from gvsl.errors import GVSLInputError
from gvsl.losses import LossTerms
from gvsl.methods.augment import random_flips
from gvsl.methods.base import Crops, PretextNetwork, PretrainMethod
from gvsl.methods.options import Bounds, MethodOptions, Probability
from gvsl.methods.pretext_heads import LAYOUT_CELLS, layout
from gvsl.runtime import full_precision

__all__ = ["DeepCluster", "DeepClusterNetwork", "DeepClusterOptions"]

# crops embedded per encoder pass while clustering
_EMBED_BATCH = 8


@dataclass
class DeepClusterOptions(MethodOptions):
    clusters: Annotated[int, Bounds(2, integer=True)] = 10
    recluster_every: Annotated[int, Bounds(1, integer=True)] = 100
    crop_set: Annotated[int, Bounds(1, integer=True)] = 64
    flip_prob: Probability = 0.5

    def __post_init__(self):
        super().__post_init__()
        if self.crop_set < self.clusters:
            raise ValueError(f"crop_set ({self.crop_set}) must hold at least one crop per cluster ({self.clusters})")


class DeepClusterNetwork(PretextNetwork):
    """Encoder, top layer, and the current clustering as buffers."""

    def __init__(self, method: PretrainMethod, in_channels: int, channels: Sequence[int]):
        super().__init__(method, in_channels, channels)
        options = method.options
        width = LAYOUT_CELLS**3 * self.backbone.global_channels
        self.top = nn.Linear(width, options.clusters)
        self.register_buffer("crop_volume", torch.zeros(options.crop_set, dtype=torch.long))
        self.register_buffer("crop_start", torch.zeros(options.crop_set, 3, dtype=torch.long))
        self.register_buffer("labels", torch.full((options.crop_set,), -1, dtype=torch.long))
        self.register_buffer("centroids", torch.zeros(options.clusters, width))
        self.register_buffer("feature_mean", torch.zeros(width))

    @property
    def clustered(self) -> bool:
        return bool((self.labels >= 0).all())

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """The features the top layer classifies (f^g pooled to 2³ cells)."""
        return layout(self.backbone.encode(image))

    def cluster_space(self, features: torch.Tensor) -> torch.Tensor:
        """Features centred on the crop set's mean and L2-normalised: where k-means and the centroids live."""
        return F.normalize(features.float() - self.feature_mean, dim=1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits, and each crop's nearest centroid (the label of held-out crops; a 10 × 8C distance)."""
        features = self.embed(image)
        return {"logits": self.top(features), "nearest": self.nearest(features)}

    @torch.no_grad()
    @full_precision
    def nearest(self, features: torch.Tensor) -> torch.Tensor:
        """Each feature's nearest centroid in the cluster space, in fp32 under autocast (a distance of
        normalised vectors)."""
        return torch.cdist(self.cluster_space(features), self.centroids.float()).argmin(dim=1)


def kmeans(features: np.ndarray, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's k-means (k-means++ starts, the best of 3): labels and centroids."""
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=clusters, n_init=3, random_state=seed).fit(features.astype(np.float64))
    return model.labels_.astype(np.int64), model.cluster_centers_.astype(np.float32)


class DeepCluster(PretrainMethod):
    key = "deepcluster"
    title = "DeepCluster"
    Options = DeepClusterOptions
    Network = DeepClusterNetwork
    uses_decoder = False

    #: held-out losses are measured against clusters that change at every re-clustering
    comparable_heldout_loss = False

    def __init__(self, options=None):
        super().__init__(options)
        self._places: list[tuple[int, tuple[int, ...]]] = []
        self._members: list[list[int]] = []
        self._labels: list[int] = []

    def check(self, crop: Sequence[int], batch_size: int) -> None:
        try:
            import sklearn.cluster  # noqa: F401
        except ImportError:
            raise GVSLInputError("deepcluster needs scikit-learn for k-means: pip install scikit-learn") from None

    def before_step(
        self,
        model: DeepClusterNetwork,
        iteration: int,
        bank: VolumeBank,
        crop: Sequence[int],
        generator: torch.Generator,
        optimizer: torch.optim.Optimizer,
        distributed: Any,
    ) -> None:
        if iteration % self.options.recluster_every == 0:
            self._recluster(model, bank, crop, generator, optimizer, distributed)
            self._read_clustering(model)
        elif not self._places:  # resumed between two clusterings: the clustering is in the checkpoint
            if not model.clustered:
                raise GVSLInputError("deepcluster: the checkpoint holds no clustering to resume with")
            self._read_clustering(model)

    @torch.no_grad()
    def _recluster(
        self,
        model: DeepClusterNetwork,
        bank: VolumeBank,
        crop: Sequence[int],
        generator: torch.Generator,
        optimizer: torch.optim.Optimizer,
        distributed: Any,
    ) -> None:
        device = model.centroids.device
        # every rank draws from its own generator; the main rank's crop set, clustering and top layer are
        # broadcast, so that the replicas stay identical
        crops, places = bank.sample_crops(self.options.crop_set, crop, generator)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        top_weight = torch.empty_like(model.top.weight, device="cpu")
        bound = 1 / model.top.in_features**0.5  # nn.Linear's own initial range
        top_weight.uniform_(-bound, bound, generator=generator)
        top_bias = torch.empty_like(model.top.bias, device="cpu").uniform_(-bound, bound, generator=generator)
        if distributed.is_main:
            features = torch.cat([model.embed(chunk.to(device)) for chunk in crops.split(_EMBED_BATCH)]).float()
            model.feature_mean.copy_(features.mean(dim=0))
            labels, centroids = kmeans(model.cluster_space(features).cpu().numpy(), self.options.clusters, seed)
            model.labels.copy_(torch.from_numpy(labels))
            model.centroids.copy_(torch.from_numpy(centroids))
        model.crop_volume.copy_(torch.tensor([index for index, _ in places]))
        model.crop_start.copy_(torch.tensor([list(start) for _, start in places]))
        model.top.weight.copy_(top_weight)
        model.top.bias.copy_(top_bias)
        if distributed.enabled:
            for tensor in (
                model.crop_volume,
                model.crop_start,
                model.labels,
                model.centroids,
                model.feature_mean,
                model.top.weight,
                model.top.bias,
            ):
                torch.distributed.broadcast(tensor.data, 0)
        for parameter in model.top.parameters():  # a new top layer starts without optimiser history
            optimizer.state.pop(parameter, None)

    def _read_clustering(self, model: DeepClusterNetwork) -> None:
        volumes, starts, labels = model.crop_volume.tolist(), model.crop_start.tolist(), model.labels.tolist()
        self._places = [(v, tuple(s)) for v, s in zip(volumes, starts)]
        members: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            members.setdefault(label, []).append(index)
        self._members = [members[label] for label in sorted(members)]
        self._labels = labels

    def sample(
        self, bank: VolumeBank, batch_size: int, crop: Sequence[int], generator: torch.Generator, jitter: int = 0
    ) -> Crops:
        count = 2 * batch_size
        clusters = torch.randint(0, len(self._members), (count,), generator=generator).tolist()
        picks = torch.rand(count, generator=generator, dtype=torch.float64).tolist()
        chosen = [self._members[c][int(p * len(self._members[c]))] for c, p in zip(clusters, picks)]
        return Crops(
            bank.crops_at([self._places[i] for i in chosen], crop),
            labels=torch.tensor([self._labels[i] for i in chosen]),
        )

    def inputs(self, crops: Crops, generator: torch.Generator):
        (images,) = random_flips(generator, crops.first, probability=self.options.flip_prob)
        return {"image": images}, {} if crops.labels is None else {"labels": crops.labels.to(images.device)}

    def loss(self, outputs, targets) -> LossTerms:
        labels = targets.get("labels")
        if labels is None:  # held-out crops: the nearest centroid is their label
            labels = outputs["nearest"]
        ce = F.cross_entropy(outputs["logits"].float(), labels)
        return LossTerms(ce, {"ce": ce})
