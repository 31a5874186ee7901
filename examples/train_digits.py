"""Train a TTFS network on scikit-learn's digits from Python, then report its efficiency.

    python examples/train_digits.py

The same as ``ttfs train --dataset digits``, written out with the library's building blocks.
"""

from ttfs_plugin.data import load_dataset
from ttfs_plugin.metrics import evaluate
from ttfs_plugin.models import mlp
from ttfs_plugin.training import TrainConfig, batches, fit, seed_everything

seed_everything(0)
data = load_dataset("digits")
net = mlp(num_classes=data.num_classes, in_shape=data.in_shape, hidden=(256, 256),
          T=32, tau0=10.0, td0=0.0)
config = TrainConfig(epochs=20, sr_target=5, lambda_tr=1e-4, lambda_tb=1e-4)
fit(net, data.train, data.val, config, progress=False)

result = evaluate(net, batches(data.val, 256))
print(f"accuracy {result['accuracy']:.4f}, {result['spikes_per_sample']:.0f} spikes/sample, "
      f"{result['sparsity']:.3f} spikes/neuron, {result['time_steps']} time steps")
for layer in result["per_layer"]:
    print(f"  {layer['name']:<6} {layer['neurons']:>5} neurons "
          f"{layer['sparsity']:.3f} spikes/neuron")
