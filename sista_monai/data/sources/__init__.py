"""Dataset sources: reading each public dataset's files and preparing its MONAI datalists.

* :mod:`.tables`: CSV files (plain, ``.gz`` or ``.zip``) with 1-based row numbers for the problems;
* :mod:`.kaggle`: the RSNA labels and SIIM RLE files (also read by :mod:`sista_monai.data.splits`);
* :mod:`.rsna`, :mod:`.siim`, :mod:`.mimic_cxr`, :mod:`.iu_xray`: ``prepare_<dataset>``, one per dataset;
* :mod:`.common`: the steps they share (image files, split choice, datalist assembly, staged writing).

``python -m sista_monai.data.prepare <dataset> ...`` is their command line. Modules are imported on use.
"""
