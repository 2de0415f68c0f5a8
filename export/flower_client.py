"""Flower's ClientApp around DeviceTrainer (no TensorFlow): `client_app` of
`keras_spela_device.flower_client`, for apps that name
`flower_client:client_app`."""

from keras_spela_device.flower_client import client_app

# Flower checks an app's reference in the module's source: a name it assigns
# or lists here.
__all__ = ["client_app"]
