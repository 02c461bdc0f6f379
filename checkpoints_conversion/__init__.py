"""PyTorch → jaxir checkpoint conversion: readers for .ckpt/.pth/.safetensors, declarative key maps with strict
accounting, and one module per source format. Command line: ``python -m checkpoints_conversion --help``.

This package needs PyTorch (to read pickled checkpoints); ``import jaxir`` never does.
"""
