"""Small, deterministic sample models (8x8 handwritten digits) for trying the compressor."""
