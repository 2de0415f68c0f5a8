"""Datasets for SPELA examples, tests and benchmarks.

Three kinds of data are offered:

* `load_digits()`: the small UCI "Optical Recognition of Handwritten Digits"
  set (1,797 images of 8x8 pixels) that ships inside the package
  (`keras_spela/datasets/data/digits.npz`, see `keras_spela/datasets/data/DIGITS_LICENSE.txt`).
  It needs no download and no extra dependency, and comes with the
  project's fixed train/test split.
* `load_fashion_mnist()`: Fashion-MNIST from its four IDX files, found on
  this machine (a directory of yours, Keras' cache or the Debian package
  `dataset-fashion-mnist`) and checked against their SHA-256, or downloaded
  by Keras.
* `load_tfds()`: image-classification sets from TensorFlow Datasets
  (`mnist`, `kmnist`, `fashion_mnist`, `cifar10`, `cifar100`,
  `svhn_cropped`) as a batched `tf.data.Dataset` of `(x, y)` pairs, scaled
  to `[0, 1]`. `tensorflow_datasets` is imported only when these are used.

A data set that is not on this machine and cannot be downloaded, or a damaged
file, raises `DatasetError` with one line that says what to do.
"""

from keras_spela.datasets.digits import DIGITS_IMAGE_SHAPE
from keras_spela.datasets.digits import DIGITS_NUM_CLASSES
from keras_spela.datasets.digits import DIGITS_NUM_EXAMPLES
from keras_spela.datasets.digits import DIGITS_NUM_TRAIN
from keras_spela.datasets.digits import load_canvas_digits
from keras_spela.datasets.digits import load_digits
from keras_spela.datasets.errors import DatasetError
from keras_spela.datasets.fashion_mnist import FASHION_MNIST_FILES
from keras_spela.datasets.fashion_mnist import keras_cache_dir
from keras_spela.datasets.fashion_mnist import load_fashion_mnist
from keras_spela.datasets.tfds import SUPPORTED_TFDS_DATASETS
from keras_spela.datasets.tfds import DatasetSpec
from keras_spela.datasets.tfds import dataset_spec
from keras_spela.datasets.tfds import load_tfds
from keras_spela.datasets.tfds import load_tfds_numpy
from keras_spela.datasets.tfds import to_numpy

__all__ = [
    "DIGITS_IMAGE_SHAPE",
    "DIGITS_NUM_CLASSES",
    "DIGITS_NUM_EXAMPLES",
    "DIGITS_NUM_TRAIN",
    "FASHION_MNIST_FILES",
    "SUPPORTED_TFDS_DATASETS",
    "DatasetError",
    "DatasetSpec",
    "dataset_spec",
    "keras_cache_dir",
    "load_canvas_digits",
    "load_digits",
    "load_fashion_mnist",
    "load_tfds",
    "load_tfds_numpy",
    "to_numpy",
]
