import torch

from tests.helpers import TinyNet, make_image_folder
from transferkit.data.preprocess import Preprocessing
from transferkit.inference.predict import Predictor
from transferkit.runtime.fastpath import FastPath


def test_images_are_run_a_batch_at_a_time_with_the_same_results(tmp_path):
    data = make_image_folder(tmp_path, per_class=3)
    paths = sorted(data.glob("*/*.png"))
    torch.manual_seed(0)
    model = TinyNet(num_classes=2).eval()
    pre = Preprocessing((3, 16, 16), (0.5,) * 3, (0.5,) * 3)
    names = ["cat", "dog"]
    whole = Predictor(model, pre, names, FastPath(False, "fp32", "test", batch_size=64)).predict(paths, top_k=2)
    calls = []
    model.register_forward_pre_hook(lambda m, args: calls.append(len(args[0])))
    batched = Predictor(model, pre, names, FastPath(False, "fp32", "test", batch_size=4)).predict(paths, top_k=2)
    assert calls == [4, 2]
    assert [r["image"] for r in batched] == [str(p) for p in paths]
    for a, b in zip(whole, batched):
        assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
        assert all(abs(x["probability"] - y["probability"]) < 1e-5 for x, y in zip(a["top"], b["top"]))
