"""Acquisition readers, one module per format, behind one interface.

:mod:`~pyama_lib.io.readers.acquisition` is the interface every reader implements,
:mod:`~pyama_lib.io.readers.formats` picks the reader for a file (``open_acquisition``, also
``pyama_lib.io.open_acquisition``), and each other module reads one format.
"""
