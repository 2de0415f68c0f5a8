"""Keras' export verb for SpelaModel: `format="litert"` writes the
on-device-trainable model."""


class LiteRTExportMixin:
    """`SpelaModel.export`."""

    def export(
        self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs
    ):
        """Exports the model; `format="litert"` writes the on-device-trainable
        LiteRT model.

        With `format="litert"` this is `keras_spela.export_tflite(self,
        filepath, **kwargs)`: signatures `train`, `infer`, `get_weights` and
        `set_weights`, TFLite builtins only (Keras' own LiteRT export is
        inference-only and may need Flex ops). Every other format is Keras'
        `Model.export` (inference only).

        Args:
            filepath: where to write the artifact (a `.tflite` file for
                `"litert"`).
            format: `"litert"`, or any format of `keras.Model.export`
                (default `"tf_saved_model"`).
            verbose: as for `keras.Model.export`; with `"litert"`, True
                prints one line naming the file.
            input_signature: not used by `"litert"` (the model's
                `keras.Input` gives the shape; `batch_size` the static batch).
            **kwargs: with `"litert"`, `export_tflite`'s arguments
                (`batch_size`, `optimizer`, `learning_rate`, `train_layers`,
                `quantize_frozen`); otherwise Keras' options.

        Returns:
            With `"litert"`, the `TFLiteExport` of `export_tflite`.

        Example:

        ```python
        model.export("spela.tflite", format="litert", batch_size=16)
        ```
        """
        if format != "litert":
            return super().export(
                filepath,
                format=format,
                verbose=verbose,
                input_signature=input_signature,
                **kwargs,
            )
        if input_signature is not None:
            raise ValueError(
                "format='litert' takes the input shape from the model's keras.Input "
                "and the static batch from batch_size=; input_signature is not used."
            )
        from keras_spela.lite import exporter  # the exporter imports this module

        unknown = sorted(set(kwargs) - set(exporter.EXPORT_ARGUMENTS))
        if unknown:
            raise ValueError(
                f"Unknown argument(s) {unknown} for format='litert'; it takes "
                f"{list(exporter.EXPORT_ARGUMENTS)} (as keras_spela.export_tflite)."
            )
        export = exporter.export_tflite(self, str(filepath), **kwargs)
        if verbose:
            print(f"Saved the trainable LiteRT model at '{export.path}'.")
        return export
