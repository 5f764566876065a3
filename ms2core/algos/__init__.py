"""One module per learning algorithm (config in storage_schemas.training, loss, update, train loop)."""
