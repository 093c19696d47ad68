"""Data sets: the catalog the repository keeps (name, files with sha256, public origin) and the
data root the data itself lives in (``$FLEET_DATA``; docs/contracts.md §5).

- ``catalog``: ``fleet/datasets/catalog/<name>.yml`` parsed into ``DataSet`` / ``FileEntry``.
- ``local``: a data set's folder in the data root, ``verify`` (sha256) and ``require`` (the folder,
  or a FleetError naming ``FLEET_DATA`` and ``fleet datasets fetch``).
- ``fetch``: download from the public origin (or a lab mirror), verify, then move into place.
- ``convert``: SMART-format IR collections (Cranfield, CISI) into the fleet collection format.
- ``cli``: ``fleet datasets list|verify|fetch``.

Nothing is imported here, so ``fleet --help`` does not load YAML or hashing code.
"""
