"""Classes with other libraries' names, signatures and numbers, on the fused kernels.

``fusedloss.compat.smp``: segmentation_models_pytorch 0.6's losses.
``fusedloss.compat.monai``: MONAI 1.6's losses.
``fusedloss.compat.tutorial``: the classic tutorial's ``nn.Module`` losses.
"""
