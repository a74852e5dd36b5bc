"""A ``transformers`` TrainerCallback that runs a :class:`CKAMonitor` inside ``Trainer.train()``.

The monitor is built at ``on_train_begin`` from the model the Trainer passes, evaluated at the end of
every ``every``-th optimizer step (``state.global_step``), and its CSV/TensorBoard writers are closed at
``on_train_end``. When the re-rise detector fires, the event goes to the log and, when ``stop_on_fire``
is set, training stops (``control.should_training_stop``).

>>> cb = CKACallback(probe_inputs={"input_ids": ids}, every=50, csv_path="cka.csv")   # doctest: +SKIP
>>> Trainer(model=model, args=args, train_dataset=ds, callbacks=[cb]).train()        # doctest: +SKIP
>>> cb.monitor.detector.fired_step                                                   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from gammalens.grok.detector import ReRiseDetector
from gammalens.grok.monitor import CKAMonitor
from gammalens.model.load import execution_device


class CKACallback(TrainerCallback):
    """Monitor inter-layer CKA during ``Trainer`` training.

    Parameters
    ----------
    probe_inputs : mapping of tensors or tensor
        Fixed probe batch (e.g. ``{"input_ids": ..., "attention_mask": ...}``), n ≥ 4 samples; moved
        to the model's device at the start of training.
    layers, every, all_pairs, select, detector, csv_path, tensorboard_dir
        As in :class:`CKAMonitor`.
    stop_on_fire : bool
        Stop training when the detector fires.
    """

    def __init__(self, probe_inputs: Any, *, layers: Sequence[str] | None = None, every: int = 100,
                 all_pairs: bool = False, select: Any = None, detector: ReRiseDetector | None = None,
                 csv_path: str | Path | None = None, tensorboard_dir: str | Path | None = None,
                 stop_on_fire: bool = False) -> None:
        self.settings = {"layers": layers, "every": every, "all_pairs": all_pairs, "select": select,
                         "detector": detector, "csv_path": csv_path, "tensorboard_dir": tensorboard_dir}
        self.probe_inputs = probe_inputs
        self.stop_on_fire = stop_on_fire
        self.monitor: CKAMonitor | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:

        device = execution_device(model)  # where the inputs go, also for a device_map-dispatched model
        probe = self.probe_inputs
        probe = ({k: v.to(device) for k, v in probe.items()} if isinstance(probe, dict) else probe.to(device))
        self.monitor = CKAMonitor(model, probe, **self.settings)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        assert self.monitor is not None, "on_train_begin was not called"
        fired_before = self.monitor.detector.fired
        self.monitor.step(state.global_step)
        if self.stop_on_fire and self.monitor.detector.fired and not fired_before:
            control.should_training_stop = True
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.monitor.close()
