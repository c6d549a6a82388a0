"""Reading latent outputs back: `load_latents` (HF datasets), `LatentDataset` (Zarr, torch), `decode_latents`,
`inspect` and previews."""
