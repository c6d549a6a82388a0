"""The on-disk format, the bottom layer: the codec, the commit marker, the dataset card, the Parquet/Arrow
tables with HF features, and the output's state. Writers and readers import it; it imports no producer."""
