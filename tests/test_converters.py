"""Converters against real peers: torchvision golden outputs, Keras 3 (JAX backend) ResNet50, and the
keras-retinanet HDF5 naming; plus the strict-merge errors."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import h5py
import jax
import numpy as np
import pytest

from cervix_jax.convert import (ConversionError, resnet50_from_keras_applications,
                                retinanet_from_keras, retinanet_from_torchvision)
from cervix_jax.convert import cli
from cervix_jax.detection import anchors_for_shape
from cervix_jax.models import retinanet
from cervix_jax.models.fpn import FPN
from cervix_jax.models.fpn import ResNetFPN as FPNModule

ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
LEVELS = ("C3", "C4", "C5", "P3", "P4", "P5", "P6", "P7")


def _load_script():
    spec = importlib.util.spec_from_file_location("golden", ROOT / "scripts" / "make_torchvision_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


recipe = _load_script()


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.fixture(scope="module")
def golden():
    """version -> (golden npz dict, recipe state dict rebuilt with NumPy only)."""
    out = {}
    for version in ("v1", "v2"):
        z = dict(np.load(GOLDEN / f"torchvision_retinanet_{version}.npz"))
        assert int(z["recipe_version"]) == recipe.RECIPE_VERSION
        keys = [str(k) for k in z["sd_keys"]]
        sd = recipe.recipe_state_dict(keys, json.loads(str(z["sd_shapes"])), int(z["seed"]))
        np.testing.assert_array_equal(recipe.recipe_input(int(z["seed"])), z["input"])
        out[version] = (z, sd)
    return out


@pytest.fixture(scope="module")
def torchvision_models(golden):
    """version -> (module, backbone + FPN variables, outputs on the golden input, variables with heads)."""
    out = {}
    with jax.default_matmul_precision("highest"):
        for version, (z, sd) in golden.items():
            module, variables = retinanet_from_torchvision(sd, version=version, heads=True)
            out[version] = (module, retinanet.backbone_variables(variables),
                            jax.jit(module.apply)(variables, z["input"]), variables)
    return out


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_torchvision_retinanet_matches_golden(golden, torchvision_models, version):
    z, sd = golden[version]
    module, backbone, out, _ = torchvision_models[version]
    assert isinstance(module, retinanet.RetinaNet)
    assert module.p6_from == {"v1": "P5", "v2": "C5"}[version]
    assert module.head_norm == {"v1": "none", "v2": "group"}[version]
    assert module.bn_eps == float(z["bn_eps"]) and module.num_classes == z["cls_logits"].shape[-1]
    for level in LEVELS + ("cls_logits", "box_deltas"):
        assert out[level].shape == z[level].shape, level
        assert rel_err(out[level], z[level]) < 1e-4, level
    np.testing.assert_array_equal(anchors_for_shape(z["input"].shape[1:3], "torchvision"), z["anchors"])
    # Without heads: the backbone + FPN alone, the same tensors.
    plain_module, plain = retinanet_from_torchvision(sd, version=version)
    assert type(plain_module) is FPNModule
    jax.tree.map(np.testing.assert_array_equal, plain, backbone)


def test_torchvision_old_fpn_and_head_keys_give_same_variables(golden, torchvision_models):
    _, sd = golden["v1"]
    old = {}
    for k, v in sd.items():
        for kind in ("inner_blocks", "layer_blocks"):
            for i in range(3):
                k = k.replace(f"backbone.fpn.{kind}.{i}.0.", f"backbone.fpn.{kind}.{i}.")
        for i in range(4):
            k = k.replace(f"_head.conv.{i}.0.", f"_head.conv.{2 * i}.")
        old[k] = v
    assert "backbone.fpn.inner_blocks.0.weight" in old and "head.regression_head.conv.6.bias" in old
    _, variables = retinanet_from_torchvision(old, version="v1", heads=True)
    jax.tree.map(np.testing.assert_array_equal, variables, torchvision_models["v1"][3])


def test_torchvision_plain_resnet50(golden, torchvision_models):
    """A plain resnet50 state dict (fc + num_batches_tracked) gives the v2 golden C3..C5 (eps 1e-5)."""
    z, sd = golden["v2"]
    plain = {k.removeprefix("backbone.body."): v for k, v in sd.items() if k.startswith("backbone.body.")}
    plain["fc.weight"] = np.random.default_rng(0).normal(size=(1000, 2048)).astype(np.float32)
    plain["fc.bias"] = np.random.default_rng(1).normal(size=(1000,)).astype(np.float32)
    module, variables = retinanet_from_torchvision(plain)
    assert set(jax.tree.leaves(jax.tree.map(lambda x: x.shape, variables))) and module.bn_eps == 1e-5
    # Same backbone tensors as the v2 RetinaNet.
    jax.tree.map(np.testing.assert_array_equal, variables["params"],
                 torchvision_models["v2"][1]["params"]["backbone"])
    jax.tree.map(np.testing.assert_array_equal, variables["batch_stats"],
                 torchvision_models["v2"][1]["batch_stats"]["backbone"])


def test_torchvision_wrong_version_is_named(golden):
    with pytest.raises(ConversionError, match="pass version='v2'"):
        retinanet_from_torchvision(golden["v2"][1], version="v1")


def test_strict_errors_list_missing_unexpected_misshaped(golden):
    sd = dict(golden["v2"][1])
    del sd["backbone.body.layer3.2.bn2.running_mean"]
    sd["backbone.body.layer9.0.conv1.weight"] = np.ones((3, 3, 1, 1), np.float32)
    sd["backbone.fpn.layer_blocks.1.0.bias"] = np.ones((255,), np.float32)
    with pytest.raises(ConversionError) as e:
        retinanet_from_torchvision(sd, version="v2")
    msg = str(e.value)
    assert "missing (1)" in msg and "backbone.body.layer3.2.bn2.running_mean" in msg
    assert "unexpected (1)" in msg and "backbone.body.layer9.0.conv1.weight" in msg
    assert "mis-shaped (1)" in msg and "backbone.fpn.layer_blocks.1.0.bias: expected (256,)" in msg


# --- Keras applications ResNet50 (Keras 3, JAX backend) ----------------------------------------------

KERAS_STAGES = ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out")


@pytest.fixture(scope="module")
def keras_resnet(tmp_path_factory):
    """Keras ResNet50 with random BN statistics: (files by layout, input, stage outputs)."""
    import keras
    keras.utils.set_random_seed(3)
    model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 96, 3))
    rng = np.random.default_rng(4)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.0, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)])
        elif isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape)])
    x = rng.normal(size=(2, 64, 96, 3)).astype(np.float32)
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in KERAS_STAGES])
    outs = [np.asarray(o) for o in probe.predict(x, verbose=0)]
    d = tmp_path_factory.mktemp("keras")
    files = {"model_weights": str(d / "full.h5"), "keras3": str(d / "resnet.weights.h5"),
             "root_colon0": str(d / "root.h5")}
    model.save(files["model_weights"])
    model.save_weights(files["keras3"])
    # The published-file layout: weights at the root, names with ":0".
    with h5py.File(files["model_weights"], "r") as src, h5py.File(files["root_colon0"], "w") as dst:
        g = src["model_weights"]
        dst.attrs["layer_names"] = g.attrs["layer_names"]
        for name in g.attrs["layer_names"]:
            name = name.decode() if isinstance(name, bytes) else name
            names = [w.decode() if isinstance(w, bytes) else w for w in g[name].attrs["weight_names"]]
            lg = dst.create_group(name)
            lg.attrs["weight_names"] = np.array([(w + ":0").encode() for w in names])
            for w in names:
                lg.create_dataset(w + ":0", data=g[name][w][()])
    return files, x, outs


def test_keras_applications_resnet50_matches_keras(keras_resnet):
    files, x, outs = keras_resnet
    module, variables = resnet50_from_keras_applications(files["model_weights"])
    with jax.default_matmul_precision("highest"):
        ours = jax.jit(module.apply)(variables, x)
    for level, ref in zip(("C2", "C3", "C4", "C5"), outs):
        assert ours[level].shape == ref.shape
        assert rel_err(ours[level], ref) < 1e-5, level
    for layout in ("keras3", "root_colon0"):   # the other layouts give the same variables
        other_module, other = resnet50_from_keras_applications(files[layout])
        assert other_module == module
        jax.tree.map(np.testing.assert_array_equal, other, variables)


# --- keras-retinanet HDF5 naming ---------------------------------------------------------------------

def _keras_retinanet_layers(stem_v01: bool, with_fpn: bool):
    """keras-resnet ResNet50 (+ keras-retinanet FPN) layer names, in model order, and torch sources."""
    names = (["input_1"] + (["padding_conv1"] if stem_v01 else [])
             + ["conv1", "bn_conv1", "conv1_relu", "pool1"])
    torch_of = {"conv1": "backbone.body.conv1", "bn_conv1": "backbone.body.bn1"}
    for stage, blocks in zip(range(2, 6), (3, 4, 6, 3)):
        for b in range(blocks):
            blk = f"{stage}{'abcdef'[b]}"
            t = f"backbone.body.layer{stage - 1}.{b}"
            for branch, conv, bn in (("2a", "conv1", "bn1"), ("2b", "conv2", "bn2"), ("2c", "conv3", "bn3")):
                if branch == "2b":
                    names.append(f"padding{blk}_branch2b")
                names += [f"res{blk}_branch{branch}", f"bn{blk}_branch{branch}"]
                torch_of[f"res{blk}_branch{branch}"] = f"{t}.{conv}"
                torch_of[f"bn{blk}_branch{branch}"] = f"{t}.{bn}"
                if branch != "2c":
                    names.append(f"res{blk}_branch{branch}_relu")
            if b == 0:
                names += [f"res{blk}_branch1", f"bn{blk}_branch1"]
                torch_of[f"res{blk}_branch1"] = f"{t}.downsample.0"
                torch_of[f"bn{blk}_branch1"] = f"{t}.downsample.1"
            names += [f"res{blk}", f"res{blk}_relu"]
    if with_fpn:
        names += ["C5_reduced", "P5_upsampled", "C4_reduced", "P4_merged", "P4_upsampled", "C3_reduced",
                  "P3_merged", "P3", "P4", "P5", "P6", "C6_relu", "P7", "classification_submodel",
                  "regression_submodel"]
        for i, n in enumerate(("C3_reduced", "C4_reduced", "C5_reduced")):
            torch_of[n] = f"backbone.fpn.inner_blocks.{i}.0"
        for i, n in enumerate(("P3", "P4", "P5")):
            torch_of[n] = f"backbone.fpn.layer_blocks.{i}.0"
        torch_of["P6"], torch_of["P7"] = "backbone.fpn.extra_blocks.p6", "backbone.fpn.extra_blocks.p7"
    return names, torch_of


def write_keras_retinanet_h5(path, sd, *, stem_v01=False, with_fpn=True, heads_sd=None):
    """An HDF5 file with keras-retinanet's structure (model_weights, layer_names, weight_names with ':0')."""
    names, torch_of = _keras_retinanet_layers(stem_v01, with_fpn)
    rng = np.random.default_rng(5)
    with h5py.File(path, "w") as f:
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([n.encode() for n in names])
        for name in names:
            lg = g.create_group(name)
            weights = {}
            if name in torch_of:
                t = torch_of[name]
                if name.startswith("bn"):
                    weights = {"gamma": sd[f"{t}.weight"], "beta": sd[f"{t}.bias"],
                               "moving_mean": sd[f"{t}.running_mean"],
                               "moving_variance": sd[f"{t}.running_var"]}
                else:
                    weights = {"kernel": sd[f"{t}.weight"].transpose(2, 3, 1, 0)}
                    if f"{t}.bias" in sd:
                        weights["bias"] = sd[f"{t}.bias"]
                weights = {f"{name}/{k}:0": v for k, v in weights.items()}
            elif name.endswith("_submodel") and heads_sd is not None:    # from a torchvision v1 head
                kind = name.split("_")[0]
                head = f"head.{kind}_head"
                final = f"{head}.{'cls_logits' if kind == 'classification' else 'bbox_reg'}"
                sources = {f"pyramid_{kind}_{i}": f"{head}.conv.{i}.0" for i in range(4)}
                sources[f"pyramid_{kind}"] = final
                weights = {f"{k}/{slot}:0": heads_sd[f"{t}.{tslot}"].transpose(2, 3, 1, 0) if slot == "kernel"
                           else heads_sd[f"{t}.{tslot}"]
                           for k, t in sources.items()
                           for slot, tslot in (("kernel", "weight"), ("bias", "bias"))}
            elif name.endswith("_submodel"):     # nested detection head
                kind = name.split("_")[0]
                weights = {f"pyramid_{kind}_{i}/{s}:0":
                           rng.normal(size=(3, 3, 256, 256) if s == "kernel" else (256,))
                           for i in range(2) for s in ("kernel", "bias")}
            lg.attrs["weight_names"] = np.array([k.encode() for k in weights])
            for k, v in weights.items():
                lg.create_dataset(k, data=np.asarray(v, np.float32))


@pytest.mark.parametrize("stem_v01", [False, True])
def test_retinanet_from_keras_maps_onto_the_torchvision_verified_network(golden, torchvision_models,
                                                                          tmp_path, stem_v01):
    """Every keras-resnet/keras-retinanet layer is consumed and lands on the same variable as the
    torchvision-verified (v2: P6 from C5, like keras-retinanet) conversion."""
    _, sd = golden["v2"]
    path = str(tmp_path / "retinanet.h5")
    write_keras_retinanet_h5(path, sd, stem_v01=stem_v01)
    module, variables = retinanet_from_keras(path)
    assert (module.style, module.stem, module.p6_from) == ("caffe", "pad3_same" if stem_v01 else "same", "C5")
    tv_variables = torchvision_models["v2"][1]
    jax.tree.map(np.testing.assert_array_equal, variables, tv_variables)


def test_retinanet_from_keras_heads(golden, torchvision_models, tmp_path):
    """heads=True: the submodels land on the same head variables as torchvision v1's (no GroupNorm), the
    backbone on v2's; without heads=True the same file gives the backbone alone; a file without heads
    is refused."""
    path = str(tmp_path / "retinanet.h5")
    write_keras_retinanet_h5(path, golden["v2"][1], heads_sd=golden["v1"][1])
    module, variables = retinanet_from_keras(path, heads=True)
    assert isinstance(module, retinanet.RetinaNet) and module.num_classes == 3 and module.head_norm == "none"
    tv1 = torchvision_models["v1"][3]
    for sub in ("classification_submodel", "regression_submodel"):
        jax.tree.map(np.testing.assert_array_equal, variables["params"][sub], tv1["params"][sub])
    jax.tree.map(np.testing.assert_array_equal, retinanet.backbone_variables(variables),
                 torchvision_models["v2"][1])
    _, plain = retinanet_from_keras(path)
    jax.tree.map(np.testing.assert_array_equal, plain, torchvision_models["v2"][1])
    write_keras_retinanet_h5(path, golden["v2"][1])
    with pytest.raises(ConversionError, match="heads=True needs a full keras-retinanet model"):
        retinanet_from_keras(path, heads=True)


def test_retinanet_from_keras_backbone_only_and_strict(golden, tmp_path):
    _, sd = golden["v2"]
    path = str(tmp_path / "backbone.h5")
    write_keras_retinanet_h5(path, sd, with_fpn=False)
    module, variables = retinanet_from_keras(path)
    assert "fpn" not in variables["params"] and set(variables["params"]) >= {"conv1", "res5c"}
    with h5py.File(path, "a") as f:
        del f["model_weights/res4c_branch2b"]
        names = [n for n in f["model_weights"].attrs["layer_names"] if n != b"res4c_branch2b"]
        f["model_weights"].attrs["layer_names"] = np.array(names)
    with pytest.raises(ConversionError, match=r"missing \(1\):\n    res4c_branch2b/kernel"):
        retinanet_from_keras(path)


def test_keras_retinanet_fpn_padding_matches_keras_conv(golden, tmp_path):
    """Caffe style P6/P7 (3x3 stride 2, 'same' on even sizes) equal Keras Conv2D(padding='same')."""
    import keras
    _, sd = golden["v2"]
    path = str(tmp_path / "retinanet.h5")
    write_keras_retinanet_h5(path, sd)
    module, variables = retinanet_from_keras(path)
    rng = np.random.default_rng(6)
    c = {f"C{i}": rng.normal(size=(1, 128 // 2 ** i, 128 // 2 ** i, 64 * 2 ** i)).astype(np.float32)
         for i in (3, 4, 5)}                                       # C5 4x4, P6 2x2: even sizes
    fpn_module = FPN(padding="same", p6_from="C5")
    with jax.default_matmul_precision("highest"):
        out = {**c, **jax.jit(fpn_module.apply)({"params": variables["params"]["fpn"]}, c)}
        fpn = variables["params"]["fpn"]
        for name, source in (("P6", np.asarray(out["C5"])), ("P7", np.maximum(np.asarray(out["P6"]), 0))):
            conv = keras.layers.Conv2D(256, 3, strides=2, padding="same")
            conv.build(source.shape)
            conv.set_weights([np.asarray(fpn[name]["kernel"]), np.asarray(fpn[name]["bias"])])
            assert rel_err(out[name], np.asarray(conv(source))) < 1e-5, name


def test_cli_writes_a_checkpoint_the_pyramid_task_loads(golden, torchvision_models, tmp_path):
    import ml_collections as mlc

    from cervix_jax.train import task_pyramid
    _, sd = golden["v1"]
    src = tmp_path / "retinanet_v1.npz"
    np.savez(src, **sd)
    out_dir = tmp_path / "ckpt"
    # As a user runs it: `python -m cervix_jax.convert.cli` in its own process; it prints the flags.
    proc = subprocess.run([sys.executable, "-m", "cervix_jax.convert.cli", str(src), str(out_dir),
                           "--format", "torchvision-v1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    flags = [f for f in proc.stdout.split() if f.startswith("--config.model.")
             and not f.startswith("--config.model.backbone_checkpoint=")]
    assert f"--config.model.backbone_checkpoint={out_dir}" in proc.stdout.split()
    assert json.loads((out_dir / "backbone.json").read_text())["format"] == "torchvision-v1"
    model_config = mlc.ConfigDict({
        "name": "pyramid", "levels": "p3,p6,p7", "upsample": "nearest_legacy", "backbone": "resnet50",
        "style": "caffe", "stem": "same", "bn_eps": 1e-5, "conv_bias": False, "p6_from": "C5",
        "backbone_checkpoint": str(out_dir)})
    config = mlc.ConfigDict({"model": model_config})
    with pytest.raises(ValueError, match="--config.model.style=torchvision"):
        task_pyramid.make(config.model).init(jax.random.PRNGKey(0), (64, 96, 3))
    for flag in flags:
        key, value = flag.removeprefix("--config.model.").split("=")
        model_config[key] = type(model_config[key])(value) if key != "conv_bias" else value == "True"
    variables = task_pyramid.make(config.model).init(jax.random.PRNGKey(0), (64, 96, 3))
    jax.tree.map(np.testing.assert_array_equal, variables["frozen"], torchvision_models["v1"][1])


# --- state-dict files through the CLI path: .pth (read without torch) and .safetensors ------------------

def test_pth_is_read_without_torch(golden):
    """The committed torch.save file (made by the golden script) holds recipe tensors; a transposed view,
    float16 and int64 come back exactly."""
    sd = cli.read_state_dict(str(GOLDEN / "torchvision_small.pth"))
    ref = golden["v1"][1]
    assert list(sd) == list(recipe.SMALL_KEYS) + ["backbone.body.layer1.0.bn1.num_batches_tracked"]
    key = "backbone.body.layer1.0.conv1.weight"
    np.testing.assert_array_equal(sd[key], ref[key].transpose(1, 0, 2, 3))
    key = "backbone.body.layer1.0.bn1.running_var"
    assert sd[key].dtype == np.float16
    np.testing.assert_array_equal(sd[key], ref[key].astype(np.float16))
    for key in ("backbone.body.conv1.weight", "backbone.body.bn1.weight"):
        np.testing.assert_array_equal(sd[key], ref[key])
    assert sd["backbone.body.layer1.0.bn1.num_batches_tracked"] == 7
    # Through the CLI: the file is read and its names are understood (strict: only missing tensors).
    with pytest.raises(ConversionError, match=r"missing \(") as e:
        cli.main([str(GOLDEN / "torchvision_small.pth"), "/nonexistent/out", "--format", "torchvision-v1"])
    assert "unexpected" not in str(e.value) and "mis-shaped" not in str(e.value)


def test_pth_reader_refuses_code(tmp_path):
    import pickle
    import zipfile
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"x": os.system}))
    with pytest.raises(pickle.UnpicklingError, match="only tensors and dicts"):
        cli.read_state_dict(str(path))


def test_safetensors_through_the_cli(golden, torchvision_models, tmp_path):
    from safetensors.numpy import save_file
    path = str(tmp_path / "retinanet_v2.safetensors")
    save_file(golden["v2"][1], path)
    module, variables = cli.convert(path, "torchvision-v2")
    assert module.p6_from == "C5"
    jax.tree.map(np.testing.assert_array_equal, variables, torchvision_models["v2"][1])
