"""A model that costs nothing, for `make bench`'s hop section: every request of a batch
gets the same valid classification (the first top_k ImageNet classes) without decoding
the image or running a network, so that what the bench measures is HTTP, TorchServe's
frontend and the gateway. Built by bench/hop.py, never served by default.

TorchServe imports this file as a top-level module: the standard library only, one class.
"""

import json
import os


class InstantHandler:
    def initialize(self, context):
        model_dir = context.system_properties["model_dir"]
        top_k = int(context.model_yaml_config["handler"]["top_k"])
        with open(os.path.join(model_dir, "index_to_name.json"), encoding="utf-8") as f:
            names = json.load(f)
        with open(os.path.join(model_dir, "weights.json"), encoding="utf-8") as f:
            shown = json.load(f)
        manifest = context.manifest["model"]
        self.answer = {
            "predictions": [{"class_id": k, "category_name": names[str(k)],
                             "probability": 0.5 / (k + 1)} for k in range(top_k)],
            "model_name": manifest["modelName"],
            "model_version": manifest.get("modelVersion", ""),
            "weights": shown,
        }
        self.initialized = True

    def preprocess(self, data):
        return data

    def inference(self, data):
        return data

    def postprocess(self, data):
        return [self.answer for _ in data]

    def handle(self, data, context):
        return self.postprocess(self.inference(self.preprocess(data)))
