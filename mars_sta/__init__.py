"""STA (spatio-temporal attention), 3D ResNet/ResNeXt backbones and the MARS distillation loss."""
