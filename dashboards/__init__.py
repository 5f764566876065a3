"""The web dashboard: datasets, validation reports, MLflow runs and models, rollouts."""
