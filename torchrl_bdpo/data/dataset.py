"""`OfflineDataset`: transitions plus what evaluation needs to know about them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from tensordict import TensorDict

from ..scores import normalized_score

__all__ = ["OfflineDataset"]


@dataclass
class OfflineDataset:
    """An offline RL dataset in TED format.

    Attributes:
        name: the id it was loaded from (Minari id or D4RL name).
        data: transitions, batch size ``[T]`` (keys: see :mod:`torchrl_bdpo.data.ted`).
        env_id: Gymnasium id of the environment to evaluate on, if known.
        ref_min_score: return of the random reference policy (normalised score 0).
        ref_max_score: return of the expert reference policy (normalised score 100).
        metadata: free-form, JSON-friendly facts about the source (format, paths, notes).

    Examples:
        >>> from torchrl_bdpo.data.ted import episodes_to_ted
        >>> import numpy as np
        >>> ep = dict(observations=np.zeros((4, 3)), actions=np.zeros((3, 2)),
        ...           rewards=np.ones(3), terminations=np.zeros(3, bool),
        ...           truncations=np.array([False, False, True]))
        >>> ds = OfflineDataset("toy", episodes_to_ted([ep]), None, 0.0, 3.0, {})
        >>> ds.obs_dim, ds.action_dim, ds.num_transitions, ds.num_episodes
        (3, 2, 3, 1)
        >>> ds.normalized_score(1.5)
        50.0
    """

    name: str
    data: TensorDict
    env_id: str | None
    ref_min_score: float | None
    ref_max_score: float | None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def obs_dim(self) -> int:
        """Size of the flat observation vector."""
        return int(self.data["observation"].shape[-1])

    @property
    def action_dim(self) -> int:
        """Size of the action vector."""
        return int(self.data["action"].shape[-1])

    @property
    def num_transitions(self) -> int:
        """Number of transitions ``T``."""
        return int(self.data.batch_size[0])

    @property
    def num_episodes(self) -> int:
        """Number of distinct values of the ``episode`` key (0 if the key is absent)."""
        if "episode" not in self.data.keys():
            return 0
        return int(self.data["episode"].unique().numel())

    def normalized_score(self, returns):
        """Normalise episode return(s) with this dataset's reference scores.

        Raises:
            ValueError: if the dataset carries no reference scores.
        """
        if self.ref_min_score is None or self.ref_max_score is None:
            raise ValueError(
                f"dataset {self.name!r} has no reference scores "
                f"(ref_min_score={self.ref_min_score}, ref_max_score={self.ref_max_score})"
            )
        return normalized_score(returns, ref_min=self.ref_min_score, ref_max=self.ref_max_score)

    def with_data(self, data: TensorDict) -> OfflineDataset:
        """A copy of this dataset holding other transitions (e.g. after a transform)."""
        return replace(self, data=data, metadata=dict(self.metadata))
