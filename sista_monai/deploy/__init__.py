"""MONAI Deploy App SDK applications of the downstream bundles (the optional ``[deploy]`` extra).

``python -m sista_monai.deploy {classification,segmentation,detection} -i DICOM_FOLDER -o OUT -m MODEL_TS`` runs a
bundle's exported ``model.ts`` on a folder of DICOM radiographs with the SDK's operators
(:mod:`sista_monai.deploy.apps`) and the few the SDK lacks for one-frame chest radiographs
(:mod:`sista_monai.deploy.operators`). Importing this package loads nothing of the SDK; its modules do.
"""
