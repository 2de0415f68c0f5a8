"""The paper's layer-by-layer SPELA schedule."""


class LayerwiseMixin:
    """`fit_layerwise` for `SpelaModel` (which has `exit_layers`,
    `train_layers` and `fit`)."""

    def fit_layerwise(self, x=None, y=None, epochs=1, **kwargs):
        """The paper's slower schedule: train exit 1 fully, then exit 2, ...

        While exit k trains, the earlier exits are frozen and run forward
        only, and the later ones are not updated.

        Args:
            x, y: training data, as for `fit`.
            epochs: epochs per SPELA layer.
            **kwargs: passed to every `fit` call.

        Returns:
            A list of `History` objects, one per SPELA layer.
        """
        histories = []
        saved = self.train_layers
        try:
            for layer in self.exit_layers:
                self.train_layers = [layer.name]
                histories.append(self.fit(x, y, epochs=epochs, **kwargs))
        finally:
            self.train_layers = saved
        return histories
