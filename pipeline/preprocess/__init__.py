"""Pure decode/preprocess functions: bytes -> codec-ready arrays. No I/O, no Ray, no model."""
