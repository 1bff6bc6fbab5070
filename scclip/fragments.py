"""10x ATAC fragments files, counted into a cells x intervals matrix of Tn5 cut sites.

The public face of :mod:`scclip.io`'s fragment counting (the code lives in ``scclip/io/_fragments.py``, with the
other file readers); see :func:`count_fragments` for the counting convention.
"""

from __future__ import annotations

from scclip.io._fragments import atac_from_fragments, count_fragments, covered_by_fragments

__all__ = ["atac_from_fragments", "count_fragments", "covered_by_fragments"]
