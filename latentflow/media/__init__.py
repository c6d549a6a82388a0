"""Media decoding and processors: image, video and audio become pixel or waveform tensors."""
