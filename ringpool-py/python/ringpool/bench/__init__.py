"""Benchmarks of the ringpool Python package: ``python -m ringpool.bench load``
(a safetensors checkpoint loaded cold, against the safetensors package and
other loaders, with fio's sequential read as the device limit)."""
