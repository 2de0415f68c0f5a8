"""The paper's staged SPELA schedules: layer by layer, or the conv stack
first and then the dense head."""

from keras_spela.core import arguments
from keras_spela.training.train_layers import resolve_train_layers


class LayerwiseMixin:
    """`fit_layerwise` for `SpelaModel` (which has `exit_layers`,
    `train_layers` and `fit`)."""

    def fit_layerwise(self, x=None, y=None, epochs=1, stages=None, **kwargs):
        """Trains the SPELA layers in stages: stage 1 fully, then stage 2, ...

        While a stage trains, the layers of earlier stages are frozen and run
        forward only, and the later ones are not updated.

        Args:
            x, y: training data, as for `fit`.
            epochs: epochs per stage, an integer or a list with one per stage.
            stages: None (the paper's MLP schedule: one stage per SPELA
                layer); `"by_kind"` (the paper's CNN schedule: each run of
                consecutive SPELA layers of one kind is a stage, so the conv
                stack trains first and then the dense head); or a list of
                stages, each anything `train_layers` takes (a name, a list of
                names, ...).
            **kwargs: passed to every `fit` call.

        Returns:
            A list of `History` objects, one per stage.

        Example:

        ```python
        # The authors' CNN notebook: 15 epochs of the conv stack, 10 of the head.
        model.fit_layerwise(x, y, epochs=[15, 10], stages="by_kind")
        ```
        """
        stages = self._stages(stages)
        if arguments.is_integer(epochs):
            epochs = [epochs] * len(stages)
        if not (
            isinstance(epochs, (list, tuple))
            and len(epochs) == len(stages)
            and all(arguments.is_integer(e) and e >= 0 for e in epochs)
        ):
            raise ValueError(
                f"epochs must be an integer or a list of {len(stages)} integers >= 0 "
                f"(one per stage), received epochs={epochs!r}."
            )
        histories = []
        saved = self.train_layers
        try:
            for stage, stage_epochs in zip(stages, epochs):
                self.train_layers = stage
                histories.append(self.fit(x, y, epochs=stage_epochs, **kwargs))
        finally:
            self.train_layers = saved
        return histories

    def _stages(self, stages):
        """The stages as lists of layer names (checked by `train_layers`)."""
        layers = self.exit_layers
        if stages is None:
            return [[layer.name] for layer in layers]
        if stages == "by_kind":
            runs = []
            for layer in layers:
                if runs and type(layer) is type(runs[-1][-1]):
                    runs[-1].append(layer)
                else:
                    runs.append([layer])
            return [[layer.name for layer in run] for run in runs]
        if not isinstance(stages, (list, tuple)) or not stages:
            raise ValueError(
                "stages must be None, 'by_kind' or a non-empty list of stages, "
                f"received stages={stages!r}."
            )
        names = [layer.name for layer in layers]
        return [resolve_train_layers(names, stage) for stage in stages]
