import resource, sys, torch, gc
which, row = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
if row == "softmax":
    x = torch.randn(4, 19, 256, 256); t = torch.randint(0, 19, (4, 256, 256), dtype=torch.uint8)
    xs, ts = torch.randn(1, 19, 8, 8), torch.randint(0, 19, (1, 8, 8), dtype=torch.uint8)
else:
    x = torch.randn(16, 1, 512, 512); t = (torch.rand(16, 1, 512, 512) < .4).to(torch.uint8)
    xs, ts = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) < .4).to(torch.uint8)
per = row == "hinge_per_image"
if which == "fused":
    import fusedloss
    fn = (lambda a, b: fusedloss.lovasz_softmax_loss(a, b, backend="cpu")) if row == "softmax" else \
         (lambda a, b: fusedloss.lovasz_hinge_loss(a, b, per_sample=per, backend="cpu"))
else:
    from segmentation_models_pytorch.losses import LovaszLoss
    loss = LovaszLoss("multiclass" if row == "softmax" else "binary", per_image=per)
    fn = (lambda a, b: loss(a, b.long())) if row == "softmax" else (lambda a, b: loss(a, b))
xs.requires_grad_(True); fn(xs, ts).backward()  # warm-up: libraries loaded
x.requires_grad_(True)
gc.collect()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fn(x, t).backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{row} {which}: peak extra {(after - before) / 1024:.0f} MiB (max RSS growth; input {x.numel()*4/2**20:.0f} MiB, grad {x.numel()*4/2**20:.0f} MiB included)")
