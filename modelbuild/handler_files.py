"""The shipped handler's files, and its model-config.yaml as the build, tests and bench read it."""

from pathlib import Path

import yaml

HANDLER_DIR = Path(__file__).resolve().parents[1] / "handler"
HANDLER_FILE = HANDLER_DIR / "resnet_handler.py"
CONFIG_FILE = HANDLER_DIR / "model-config.yaml"
MODEL_CONFIG = yaml.safe_load(CONFIG_FILE.read_text(encoding="utf-8"))
# The handler's pixel limit, the one value (model-config.yaml) every decode here uses too.
MAX_IMAGE_PIXELS = int(MODEL_CONFIG["handler"]["max_image_pixels"])
