"""What every selector shares: its config base class, the contract the trainer, ``load_run`` and ``vpeft measure``
call, and nothing else of it.

A selector chooses which existing weights train, on top of a method, by a pass before training (GPS: one gradient
pass over the training data). Its choice is a *state*: a flat mapping of names to tensors, which the trainer saves as
``selection.safetensors`` (a resumed run reloads it instead of running the pass again).

- :meth:`SelectorConfig.prepare` runs the pass and returns the state;
- :meth:`SelectorConfig.apply` makes the selected entries trainable (modules it adds go under
  ``model.extras[self.name]``, so their tensors are part of the trainable checkpoint);
- :meth:`SelectorConfig.state_from_checkpoint` reads the state back from a trainable checkpoint (``load_run``);
- :meth:`SelectorConfig.structure_only` is a state of the same structure with no data (``vpeft measure``);
- :meth:`SelectorConfig.record` says what the pass did (the ``selection`` block of ``result.json``) and
  :meth:`SelectorConfig.describe` names the selection in one line (``vpeft train``'s summary).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from ..config_base import BaseConfig
from ..errors import ConfigError
from ..spec import spec_string

State = dict[str, torch.Tensor]


@dataclass(kw_only=True)
class SelectorConfig(BaseConfig):
    """Base of every selector config. Subclasses implement :meth:`prepare`, :meth:`apply` and
    :meth:`state_from_checkpoint`; :meth:`structure_only`, :meth:`record` and :meth:`describe` have defaults."""

    name: ClassVar[str]
    #: The selection can be folded into a plain timm model (``vpeft merge``; the selector implements ``merge``).
    mergeable: ClassVar[bool] = False
    #: Overrides the registry-parametrised tests use (e.g. a selection that needs no data).
    test_overrides: ClassVar[dict] = {}

    def check_task(self, task) -> None:
        """Fail with a :class:`~vpeft.errors.ConfigError` if the selection cannot serve ``task`` (a
        :class:`~vpeft.tasks.base.TaskConfig`), e.g. when its pass computes a loss that needs class labels."""

    def prepare(
        self,
        model,
        data,
        *,
        normalize: str = "inception",
        batch_size: int = 32,
        progress: bool = False,
        source: Optional[tuple[Any, Optional[str]]] = None,
        task: Any = None,
    ) -> State:
        """Run the selection pass on the training data and return the state :meth:`apply` takes.

        Args:
            model: The backbone with the method applied, on its device.
            data: The training split (a :class:`~vpeft.data.loader.DeviceData` in a run; uint8 images, labels).
            normalize: The run's input normalisation (``data.normalize``).
            batch_size: The run's training batch size (a selector may have its own).
            progress: Show a progress bar.
            source: ``(data config, split name)`` the data came from, for a selector that reads it again.
            task: The run's :class:`~vpeft.tasks.base.Task` (batch preparation and loss), for a pass that takes the
                task's own loss.
        """
        raise NotImplementedError

    def apply(self, model, state: State) -> None:
        """Make the entries ``state`` selects trainable (the method already applied); sets ``model.selector``."""
        raise NotImplementedError

    def state_from_checkpoint(self, model, trainable_state: dict[str, torch.Tensor]) -> State:
        """The state recorded in a run's trainable tensors (what ``apply`` added under ``model.extras``)."""
        raise NotImplementedError

    def structure_only(self, model) -> State:
        """A state of the structure the real pass gives (what trains, its memory), chosen without data."""
        raise ConfigError(f"selector {self.name!r} needs data to select; it has no data-free selection")

    def count(self, state: State) -> int:
        """How many entries ``state`` selects (the result's ``selection.selected``): by default one per element."""
        return int(sum(v.numel() for v in state.values()))

    def record(self) -> dict:
        """What the last :meth:`prepare` did, for the result's ``selection`` block (after its seconds, selected
        entries and images)."""
        return {}

    def describe(self) -> str:
        """The selection in a few words, for ``vpeft train``'s summary."""
        return spec_string(self)

    def merge(self, model) -> None:
        """Fold the trained selection into the backbone's weights (only where :attr:`mergeable`)."""
        raise ConfigError(f"selector {self.name!r} cannot be merged")
