"""Demo datasets read from the Zarr layout written by pipelines.render (see ms2core.data.demo_dataset)."""

from ms2core.data.demo_dataset import BatchStream, DemoBatch, DemoDataset, ZarrDemoStore, open_demo_store

__all__ = ["BatchStream", "DemoBatch", "DemoDataset", "ZarrDemoStore", "open_demo_store"]
