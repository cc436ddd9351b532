"""Classes with other libraries' names, signatures and numbers, on the fused kernels.

``fusedloss.compat.tutorial``: the classic tutorial's ``nn.Module`` losses.
"""
