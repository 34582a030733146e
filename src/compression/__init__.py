"""Gradient compression: quantisers, aggregation across workers, bit-packing, the exchange."""
