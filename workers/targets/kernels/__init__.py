"""Target kernels: the JAX half of each target (probe, rules, the trainer's checks, the exported modules and
how the trainer assembles them). Only the tracer and the trainer import them, through `Target`'s properties;
the cards in `workers/targets/` stay free of JAX.
"""
