"""Measurement: load model versions, replay their requests, time them."""
