"""Datasets for the book's experiments: Fashion-MNIST and CIFAR-10 as NumPy arrays.

Conventions
-----------
* Images are ``uint8`` in ``[0, 255]``: Fashion-MNIST ``(N, 28, 28)``, CIFAR-10
  ``(N, 32, 32, 3)`` (height, width, RGB channel last, as stored). Converting to float,
  scaling and moving channels first is the training code's job, not the loader's.
* Labels are ``int64`` class indices. CIFAR-10's order is :data:`CIFAR10_CLASSES`
  (``airplane`` = 0 ... ``truck`` = 9), the canonical archive's ``label_names``.
* Every loader returns ``(x_train, y_train, x_test, y_test)``.
* Results must say which data they came from: :func:`cifar10_info` and
  :func:`fashion_mnist_info` give the variant, the checksums and the path, ready to pass to
  :func:`bnbook.provenance.collect_provenance`.

The modules, one idea each (arrows point one way: the data sets use ``fetch``):

* :mod:`bnbook.data.fetch` - the data directory, the mirror, checked copies and downloads;
* :mod:`bnbook.data.idx` - the IDX file format;
* :mod:`bnbook.data.fashion_mnist` - Fashion-MNIST: sources, checksums, loader;
* :mod:`bnbook.data.cifar10_formats` - CIFAR-10's file formats, read safely;
* :mod:`bnbook.data.cifar10` - CIFAR-10: sources, checksums, ``.npy`` cache, loader;
* ``python -m bnbook.data`` (:mod:`bnbook.data.__main__`) - provision both (``make data``).

Both loaders find their data in the same order: an explicit path (``$BNBOOK_CIFAR10``,
``$BNBOOK_FASHION_MNIST``), the data directory (``$BNBOOK_DATA``, default
``<repo>/data/cache``), the mirror (``$BNBOOK_MIRROR``), Debian's ``dataset-fashion-mnist``
(Fashion-MNIST only), then the canonical URL.

The constants re-exported here are read from their own modules at call time: to change one
(in a test, say), set it there (``bnbook.data.fashion_mnist.DEBIAN_FASHION_MNIST``).
"""

from bnbook.data.cifar10 import (CIFAR10_ARCHIVE, CIFAR10_BATCHES_DIR, CIFAR10_JPEG_ARCHIVE,
                                 CIFAR10_JPEG_SHA256, CIFAR10_URL, CIFAR10Source, cifar10_info,
                                 find_cifar10_source, load_cifar10, provide_cifar10)
from bnbook.data.cifar10_formats import (CIFAR10_BATCH_MD5, CIFAR10_CLASSES, CIFAR10_MD5,
                                         extract_archive, read_image_folder,
                                         read_python_archive, read_python_batches_dir)
from bnbook.data.fashion_mnist import (DEBIAN_FASHION_MNIST, FASHION_MNIST_FILES,
                                       FASHION_MNIST_IDX_SHA256, FASHION_MNIST_MD5,
                                       FASHION_MNIST_URL, fashion_mnist_dir, fashion_mnist_info,
                                       load_fashion_mnist, provide_fashion_mnist)
from bnbook.data.fetch import download_file, mirror_dir, resolve_data_dir
from bnbook.data.idx import idx_sha256, read_idx

__all__ = [
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_IDX_SHA256",
    "FASHION_MNIST_URL",
    "DEBIAN_FASHION_MNIST",
    "read_idx",
    "idx_sha256",
    "fashion_mnist_dir",
    "fashion_mnist_info",
    "provide_fashion_mnist",
    "load_fashion_mnist",
    "CIFAR10_CLASSES",
    "CIFAR10_URL",
    "CIFAR10_ARCHIVE",
    "CIFAR10_BATCHES_DIR",
    "CIFAR10_MD5",
    "CIFAR10_BATCH_MD5",
    "CIFAR10_JPEG_ARCHIVE",
    "CIFAR10_JPEG_SHA256",
    "CIFAR10Source",
    "resolve_data_dir",
    "mirror_dir",
    "find_cifar10_source",
    "cifar10_info",
    "provide_cifar10",
    "download_file",
    "extract_archive",
    "read_python_archive",
    "read_python_batches_dir",
    "read_image_folder",
    "load_cifar10",
]
