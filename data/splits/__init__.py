"""The released RSNA and SIIM split files, installed as the package data of ``sista_monai.data.released_splits``.

``setup.cfg`` maps this folder to that package so that ``importlib.resources`` finds the files in editable
and plain installs alike (see :func:`sista_monai.data.splits.default_splits_dir`). Nothing to import here.
"""
