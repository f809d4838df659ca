"""The networks: the model registry, checkpoints loaded safely, devices, the ``SliceModel`` split
(encode once, decode per prompt), the fast CPU runtimes and the int8 encoder. Imports ``files`` (atomic
exports)."""
