"""Datasets: the synthetic demo, the raw layouts `prepare` reads, the manifest every later stage aligns to."""
