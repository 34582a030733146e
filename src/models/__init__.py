"""Model factories.

Every factory has the signature ``factory(input_shape, num_classes, **kwargs) -> nn.Module``
where ``input_shape`` is (C, H, W) of one sample; the module maps (N, C, H, W) float tensors
to (N, num_classes) logits.
"""
