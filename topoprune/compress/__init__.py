"""Deep Compression's storage (Han et al. 2016): weight sharing, relative sparse indices, Huffman
coding and the compressed model file that ``topoprune compress`` writes and every reader reads.

- :mod:`~topoprune.compress.weight_sharing`: 1-D k-means codebooks (linear, density, random
  initialisation);
- :mod:`~topoprune.compress.sparse_index`: kept positions as fixed-width gaps with fillers;
- :mod:`~topoprune.compress.huffman` and :mod:`~topoprune.compress.bitstream`: canonical
  Huffman codes and bit packing;
- :mod:`~topoprune.compress.container`: the file format (docs/compression.md);
- :mod:`~topoprune.compress.api`: compress any checkpoint, the per-stage storage report.

Plain numpy: the trained centroids are a pruning method (``trained-quantization``).
"""

from topoprune.compress.api import CompressionReport, compress_checkpoint, decompressed_state_dict
from topoprune.compress.container import CompressedFileError, read_compressed, write_compressed

__all__ = [
    "CompressedFileError",
    "CompressionReport",
    "compress_checkpoint",
    "decompressed_state_dict",
    "read_compressed",
    "write_compressed",
]
