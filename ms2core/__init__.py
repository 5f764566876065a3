"""The ms2flow learning core: envs, observation processing, networks, algorithms, data."""

__version__ = "0.1.0"
