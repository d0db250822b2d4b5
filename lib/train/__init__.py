"""Training: models, augmentation, the fit loop and the backbone pretraining stage."""
