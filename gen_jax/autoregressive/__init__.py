"""Autoregressive models: PixelCNN family, PixelRNN, PixelCNN++, transformer LMs, WaveNet."""
