"""flatbuffer_ops reads the operators of an export: builtin operators only in every
exported file, and the Flex ops of a backprop train model are named."""

import sys

import pytest
import tensorflow as tf

from keras_spela.lite import flatbuffer_ops


# ------------------------------------------------------------ builtin only
@pytest.mark.parametrize(
    "name", ["sgd", "momentum", "adam", "quantized", "micro_train", "micro_infer"]
)
def test_exported_flatbuffer_has_builtin_operators_only(dense_exports, name):
    with open(dense_exports["paths"][name], "rb") as f:
        data = f.read()
    operators = flatbuffer_ops.read_operators(data)
    assert operators, "no operator was read"
    custom = [op for op in operators if op.startswith("CUSTOM:")]
    assert custom == []
    assert flatbuffer_ops.check_builtin_only(data) == operators
    if name != "micro_infer":
        # The train step really is in the file: it writes variables.
        assert operators["ASSIGN_VARIABLE"] > 0
    if name in dense_exports["exports"]:
        assert dense_exports["exports"][name].operators == operators


@pytest.mark.parametrize("name", ["sgd", "adam", "quantized", "micro_train"])
def test_resource_variables_counted_like_tensorflow(dense_exports, name):
    """The count read from the operators equals TensorFlow's, which unpacks the
    whole file."""
    from tensorflow.lite.tools import flatbuffer_utils

    with open(dense_exports["paths"][name], "rb") as f:
        data = f.read()
    expected = flatbuffer_utils.count_resource_variables(
        flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    )
    assert expected > 0
    assert flatbuffer_ops.count_resource_variables(data) == expected


def test_read_operators_detects_flex_op_of_backprop_train_model():
    """The standard recipe (GradientTape + SELECT_TF_OPS) gives Flex ops, and
    the check names them. (The only SELECT_TF_OPS converter of the tests.)"""

    class BackpropModule(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.random.stateless_normal((8, 4), seed=(1, 2)))

        @tf.function(
            input_signature=[tf.TensorSpec((2, 8), tf.float32), tf.TensorSpec((2, 4), tf.float32)]
        )
        def train(self, x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(tf.nn.relu(x @ self.w) - y))
            self.w.assign_sub(0.1 * tape.gradient(loss, self.w))
            return {"loss": loss}

    module = BackpropModule()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.train.get_concrete_function()], module
    )
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    converter.experimental_enable_resource_variables = True
    data = converter.convert()
    operators = flatbuffer_ops.read_operators(data)
    flex = [op for op in operators if op.startswith("CUSTOM:Flex")]
    assert flex, dict(operators)
    assert flatbuffer_ops.non_builtin_operators(data) == sorted(flex)
    with pytest.raises(ValueError, match="Flex") as error:
        flatbuffer_ops.check_builtin_only(data)
    for op in flex:
        assert op in str(error.value)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
