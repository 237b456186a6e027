"""Model training (Ray Tune, Ray Train, MLflow) and the model registry: built under the models issue."""
