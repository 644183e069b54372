"""Package a bundle for the MONAI Model Zoo and MONAI Deploy: ``python -m sista_monai.package BUNDLE_DIR --out DIR``.

The packaged folder is self-contained: a user with the folder alone (and PyPI for MONAI, torch and the other
dependencies) installs this project from the wheel inside it and runs ``configs/inference.json`` from any working
folder with ``--bundle_root DIR``. The source bundle is only read; everything is rewritten in the output folder,
so later edits of the source configs flow through the next packaging.

What the packager writes (for ``bundles/pretrain`` and the three downstream bundles):

* ``models/model.pt``: a weights-only state dict of the packaged ``network_def``. A downstream bundle's trained
  ``models/model.pt`` is copied; the pretraining bundle's is the IMAGE-ONLY network
  (:class:`~sista_monai.networks.GlobalImageFeatures` on the encoder of ``models/image_encoder.pt``, read and
  checked against its JSON sidecar by :mod:`sista_monai.io.encoder`). Either way the file must load strictly
  into the packaged ``network_def``.
* ``models/model.ts``: MONAI's own ``ckpt_export`` run on the packaged copy, where TorchScript applies.
* ``configs/``: every config of the source bundle; ``bundle_root`` is ``"."`` (the model-zoo convention: run in
  the bundle folder or pass ``--bundle_root``) and the downstream training configs' ``pretrained_encoder`` is
  ``$@bundle_root + '/models/image_encoder.pt'``. ``inference.json`` stands alone (``bundle_root``, ``device``,
  ``network_def``, ``inferer``, ``output_dir``; override files given with ``--layer``, e.g. ``paper.json``,
  merged in). The pretraining bundle's is its committed ``configs/image_inference.json``, copied: image in,
  global image features out (one JSON per image), the encoder's architecture and preprocessing read from the
  ``models/image_encoder.json`` sidecar; ``models/image_encoder.pt`` and its sidecar are shipped beside
  ``model.pt`` (the same weights; the config loads them, and a downstream bundle can train from them).
* ``configs/metadata.json``: copied and completed: ``monai_version``/``pytorch_version``/``numpy_version`` and
  ``required_packages_version`` (MONAI 1.6's name for ``optional_packages_version``, which MONAI renames on
  reading, and the key the 2024 metadata schema requires) as installed here, ``sista-monai`` included; the
  pretraining bundle's ``network_data_format`` describes the image-only network.
* ``wheels/sista_monai-<version>-py3-none-any.whl``: this project, built offline from its source tree.
* ``LICENSE``, ``docs/`` (the source's, with a section on the packaged bundle appended to ``docs/README.md``),
  ``docs/data_license.txt`` (the terms of the datasets the bundle's ``data_source`` names), ``large_files.yml``.

The model-zoo file rules the packager enforces (after Project-MONAI/model-zoo ``CONTRIBUTING.md`` and
``ci/verify_bundle.py``; a violation stops the packaging with a message naming the file and the rule):

1. necessary files: ``configs/metadata.json`` and ``LICENSE``; preferred files: ``models/model.pt`` and
   ``configs/inference.json``; this project also requires ``docs/README.md`` and ``docs/data_license.txt``;
2. ``metadata.json`` has ``version`` and ``changelog``, and the version has a changelog entry;
3. ``inference.json`` defines ``bundle_root``, ``device``, ``network_def`` and ``inferer``, and ``output_dir``
   for its outputs;
4. no single file is larger than 25 MB (``--size-limit-mb``): every larger file is listed in
   ``large_files.yml`` (``path``, ``url``, ``hash_val`` = its SHA-256, ``hash_type: sha256``; the files stay in
   the folder here, and are left out of a pull request to the zoo, which downloads them from ``url``);
5. no config value is an absolute path or a path into this repository's ``bundles/`` folder (paths are
   resolved from ``bundle_root``).

The parts, one module each: the command line (:mod:`.cli`), the packaged folder assembled (:mod:`.assemble`), its
configs (:mod:`.configs`), the image-side network and its TorchScript (:mod:`.model`), the text side
(:mod:`.text_side`), the completed metadata (:mod:`.metadata`), the wheel (:mod:`.wheel`), the docs and data
licences (:mod:`.docs`) and the model-zoo file rules with ``large_files.yml`` (:mod:`.rules`).
"""

from __future__ import annotations

from sista_monai.package.assemble import package_bundle
from sista_monai.package.cli import main
from sista_monai.package.docs import data_license_text
from sista_monai.package.rules import LARGE_FILES, SIZE_LIMIT_MB, check_bundle_folder

__all__ = [
    "LARGE_FILES",
    "SIZE_LIMIT_MB",
    "check_bundle_folder",
    "data_license_text",
    "main",
    "package_bundle",
]
