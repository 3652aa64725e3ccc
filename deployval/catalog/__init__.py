"""Which models there are: the built-in zoo, the model argument resolved to a spec (registry), and the
suite manifests that list models with their backends, precisions and bounds."""
