"""Fine-tuning: settings, 2D samples from labelled volumes, the loss, the trainer, its log and its
place among ``torchrun`` processes. Imports ``evaluation`` (metrics) and the layers below."""
