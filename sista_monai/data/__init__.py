"""Datalists, dataset preparation, splits and the synthetic demo data.

Modules are imported on use (``from sista_monai.data.demo import ensure_demo_data``) so that importing
this package stays cheap.
"""
