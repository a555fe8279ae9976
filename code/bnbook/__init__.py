"""bnbook: the library behind the book *Batch Normalization, derived, built and tested*.

One module per idea:

* :mod:`bnbook.numpy_norms` - batch norm forward/backward from scratch in NumPy;
* :mod:`bnbook.gradcheck` - finite differences and the book's relative error;
* :mod:`bnbook.provenance` - result files with provenance, written atomically.
"""

__version__ = "0.1.0"
