"""Sources: listing input shards (WebDataset tars, Parquet, HF datasets, folders; local or fsspec URLs) and
reading them into records."""
