"""The run: the pure train step and train state, the training loop, checkpoints, preemption, the optimizer,
the metrics log, device-resident input and a model's outputs outside training.
"""
