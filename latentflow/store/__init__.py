"""The store: the exactly-once Parquet + Zarr shard writer and the output's summary, card and errors."""
