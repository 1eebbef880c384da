"""walloc-pipeline: WaLLoC latents for images, rasters and audio, encoded at cluster scale.

    source (list, read bytes) -> preprocess (decode, resize/crop | resample/segment)
        -> codec (WPT + encoder + quantizer) -> sink (WebDataset / Zarr shards) -> manifest

The codec library is `pipeline.codec`; the Ray runtime is `pipeline.runtime`; readers for
training loops are `pipeline.loaders`.
"""

__version__ = "0.1.0"
