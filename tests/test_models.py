import json
import math

import pytest
import torch
from torch import nn

from ttfs_plugin import CheckpointError, ConfigError, InputShapeError, TTFSActivation
from ttfs_plugin.checkpoint import load_checkpoint, save_checkpoint
from ttfs_plugin.data import load_digits
from ttfs_plugin.metrics import evaluate
from ttfs_plugin.models import (
    AvgPool,
    Conv,
    Dense,
    Flatten,
    MaxPool,
    NetworkConfig,
    TTFSNetwork,
    get_model,
    mlp,
    small_cnn,
    vgg16,
)
from ttfs_plugin.training import TrainConfig, batches, fit


def test_builders_give_logits_of_the_right_shape():
    assert mlp()(torch.rand(4, 1, 8, 8)).shape == (4, 10)
    assert small_cnn(in_shape=(2, 34, 34))(torch.rand(3, 2, 34, 34)).shape == (3, 10)
    assert vgg16(num_classes=100, width=0.125)(torch.rand(2, 3, 32, 32)).shape == (2, 100)


def test_vgg16_is_the_papers_configuration():
    net = vgg16()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == 13 and len(linears) == 3
    assert [m.out_features for m in linears] == [512, 512, 10]
    assert len(net.spiking_layers()) == 16  # input encoder + 13 conv + 2 hidden FC
    assert net.spiking_layers()[0][0] == "input"


def test_relu_twin_has_the_same_weights_and_no_spiking_neurons():
    spiking, relu = small_cnn(), small_cnn(activation="relu")
    weight_shapes = lambda net: [tuple(m.weight.shape) for m in net.modules()  # noqa: E731
                                 if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert weight_shapes(spiking) == weight_shapes(relu)
    assert not any(isinstance(m, TTFSActivation) for m in relu.modules())
    assert relu.spiking_layers() == []
    assert relu(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_avg_pooling_variant():
    net = small_cnn(pool="avg")
    assert any(isinstance(m, nn.AvgPool2d) for m in net.modules())
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())


def test_config_round_trips_through_json():
    cfg = vgg16(width=0.25, pool="avg", T=16, tau0=5.0, td0=1.0).config
    again = NetworkConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_custom_layer_list():
    cfg = NetworkConfig([Conv(4), AvgPool(2), Conv(8, kernel_size=5), MaxPool(2), Flatten(),
                         Dense(16, batch_norm=False)], (1, 12, 12), 3)
    net = TTFSNetwork(cfg)
    assert net(torch.rand(2, 1, 12, 12)).shape == (2, 3)
    assert [n for n, _ in net.spiking_layers()] == ["input", "ttfs1", "ttfs2", "ttfs3"]


@pytest.mark.parametrize("layers, message", [
    ([Dense(4)], "Flatten"),
    ([Conv(2), MaxPool(2), MaxPool(2), MaxPool(2), MaxPool(2)], "shrinks"),
    ([Flatten(), Conv(3)], "cannot follow"),
])
def test_bad_layer_lists_are_refused(layers, message):
    with pytest.raises(ConfigError, match=message):
        TTFSNetwork(NetworkConfig(layers, (1, 8, 8), 10))


@pytest.mark.parametrize("kwargs, message", [
    ({"T": 1}, "T must be an integer >= 2"),
    ({"tau0": 0.0}, "tau must be > 0"),
    ({"tau0": -1.0}, "tau must be > 0"),
    ({"theta0": 0.0}, "theta0 must be > 0"),
    ({"grad_mode": "magic"}, "unknown gradient mode"),
])
def test_bad_kernel_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        mlp(**kwargs)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'resnet'.*cnn, mlp, vgg16"):
        get_model("resnet")


@pytest.mark.parametrize("x, message", [
    (torch.rand(2, 8, 8), r"does not match the model's \(N, 1, 8, 8\)"),
    (torch.rand(2, 3, 8, 8), "3 channels where the model expects 1"),
    (torch.full((2, 1, 8, 8), math.nan), "NaN or inf"),
    (torch.full((2, 1, 8, 8), math.inf), "NaN or inf"),
    (torch.ones(2, 1, 8, 8, dtype=torch.long), "float tensor"),
])
def test_bad_input_gets_a_clear_error(x, message):
    for net in (mlp(), mlp(activation="relu")):
        with pytest.raises(InputShapeError, match=message):
            net(x)


def test_checkpoint_round_trip(tmp_path):
    net = small_cnn(in_shape=(1, 12, 12), channels=(4, 8), hidden=16)
    net.eval()
    with torch.no_grad():
        net.ttfs1.kernel.tau.fill_(7.5)
    x = torch.rand(5, 1, 12, 12)
    save_checkpoint(tmp_path / "c.pt", net, preset="sm", epoch=3)
    again, record = load_checkpoint(tmp_path / "c.pt")
    assert (record.preset, record.epoch) == ("sm", 3)
    assert again.ttfs1.kernel.tau.item() == 7.5
    assert torch.equal(again(x), net(x))


def test_damaged_or_foreign_checkpoints_are_refused(tmp_path):
    net = mlp()
    good = tmp_path / "good.pt"
    save_checkpoint(good, net)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": net.state_dict()}, foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    cases = [(truncated, "truncated"), (foreign, "not a ttfs-plugin checkpoint"),
             (garbage, "truncated or not"), (tmp_path / "missing.pt", "no checkpoint")]
    for path, message in cases:
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)
    load_checkpoint(good)  # the good one still loads


def test_short_training_on_digits_learns():
    data = load_digits()
    net = mlp(hidden=(64,))
    history = fit(net, data.train, data.val, TrainConfig(epochs=6, sr_target=2, lambda_tr=1e-4,
                                                         lambda_tb=1e-4), progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert history[0]["p_relax"] == pytest.approx(0.5) and history[1]["p_relax"] == 0.0
    assert not history[1]["regularised"] and history[2]["regularised"]
    assert history[-1]["val_accuracy"] > 0.8
    result = evaluate(net, batches(data.val, 100))
    assert result["accuracy"] == pytest.approx(history[-1]["val_accuracy"])
    assert 0 < result["sparsity"] < 1


def test_vgg16_dropout_sits_where_the_authors_put_it_and_is_gone_in_eval():
    from torch import nn

    from ttfs_plugin.models import vgg16

    with_dropout = vgg16(width=1 / 16, dropout=True)
    placed = [(name, module.p) for name, module in with_dropout.named_children()
              if isinstance(module, nn.Dropout)]
    assert placed == [("drop_1", 0.3), ("drop_3", 0.4), ("drop_5", 0.4), ("drop_6", 0.4),
                      ("drop_8", 0.4), ("drop_9", 0.4), ("drop_11", 0.4), ("drop_12", 0.4),
                      ("drop_flatten", 0.5), ("drop_14", 0.5), ("drop_15", 0.5)]
    names = [name for name, _ in with_dropout.named_children()]
    for name, _ in placed[:8]:  # right after the neuron of that conv
        assert names[names.index(name) - 1] == f"ttfs{name.split('_')[1]}"
    plain = vgg16(width=1 / 16)
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    plain.load_state_dict(with_dropout.state_dict())  # dropout holds no weights
    x = torch.rand(3, 3, 32, 32)
    with_dropout.eval()
    plain.eval()
    assert torch.equal(with_dropout(x), plain(x))
    from ttfs_plugin.export import plan_network

    assert [s.to_dict() for s in plan_network(with_dropout)] == [
        s.to_dict() for s in plan_network(plain)]
    with_dropout.train()
    torch.manual_seed(0)
    assert not torch.equal(with_dropout(x), plain.train()(x))  # it acts in training
