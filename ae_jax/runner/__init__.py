"""The run of an experiment: its config schema and checks, the training loop, the experiment as the
trainer builds it, and the bottleneck inspector of a config."""
