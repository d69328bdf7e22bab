"""Sepal's test Flower app: federated linear regression (numpy only)."""
