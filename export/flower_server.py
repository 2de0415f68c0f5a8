"""Flower's ServerApp, FedAvg over DeviceTrainer clients (no TensorFlow):
`server_app` of `keras_spela_device.flower_server`, for apps that name
`flower_server:server_app`."""

from keras_spela_device.flower_server import server_app

# Flower checks an app's reference in the module's source: a name it assigns
# or lists here.
__all__ = ["server_app"]
